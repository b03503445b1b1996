"""The admin pages load with data, for staff, and are closed to everyone else."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Agent
from conversations.models import Conversation, Message, Participant
from runs.models import Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def data(user):
    agent = Agent.objects.create(name="Helper", provider="local", model="smollm2")
    conversation = Conversation.objects.create(owner=user, title="Planning")
    Participant.objects.create(conversation=conversation, agent=agent)
    Message.objects.create(conversation=conversation, role="user", content="What is 2+2?", seq=1)
    reply = Message.objects.create(conversation=conversation, role="agent", agent=agent, content="4", seq=2)
    run = Run.objects.create(conversation=conversation, agent=agent, reply_message=reply, status="completed")
    return {"agent": agent, "conversation": conversation, "message": reply, "run": run}


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.mark.parametrize("model", ["agent", "conversation", "message", "run"])
def test_staff_see_the_list_the_change_page_and_search(staff_client, data, model):
    app = {"agent": "agents", "run": "runs"}.get(model, "conversations")
    changelist = reverse(f"admin:{app}_{model}_changelist")
    response = staff_client.get(changelist)
    assert response.status_code == 200
    term = {"agent": "Helper", "conversation": "Planning", "message": "2+2", "run": "Helper"}[model]
    response = staff_client.get(changelist, {"q": term})
    assert response.status_code == 200
    assert response.context["cl"].result_count >= 1
    change = reverse(f"admin:{app}_{model}_change", args=[data[model].pk])
    assert staff_client.get(change).status_code == 200


def test_the_conversation_page_shows_its_messages_inline(staff_client, data):
    response = staff_client.get(
        reverse("admin:conversations_conversation_change", args=[data["conversation"].pk])
    )
    body = response.content.decode()
    assert "What is 2+2?" in body
    assert "Planning" in body


def test_list_filters_work(staff_client, data):
    url = reverse("admin:agents_agent_changelist")
    assert staff_client.get(url, {"status__exact": "active"}).context["cl"].result_count == 1
    assert staff_client.get(url, {"status__exact": "paused"}).context["cl"].result_count == 0


def test_the_pause_and_activate_actions_change_status(staff_client, data):
    url = reverse("admin:agents_agent_changelist")
    staff_client.post(url, {"action": "pause", "_selected_action": [data["agent"].pk]})
    data["agent"].refresh_from_db()
    assert data["agent"].status == "paused"
    staff_client.post(url, {"action": "activate", "_selected_action": [data["agent"].pk]})
    data["agent"].refresh_from_db()
    assert data["agent"].status == "active"


def test_non_staff_are_sent_to_the_login_page(client, user, data):
    client.force_login(user)
    response = client.get(reverse("admin:agents_agent_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
