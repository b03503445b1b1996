"""The data model's constraints hold in the database itself, not only in forms."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from agents.models import Agent
from conversations.models import Conversation, Message, Participant
from runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def agent():
    return Agent.objects.create(name="Helper", provider="local", model="smollm2")


@pytest.fixture
def conversation(user, agent):
    conversation = Conversation.objects.create(owner=user)
    Participant.objects.create(conversation=conversation, agent=agent, position=0)
    return conversation


def test_it_refuses_an_unknown_agent_status():
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(name="x", provider="local", model="m", status="sleeping")


def test_it_refuses_an_empty_agent_name_or_model():
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(name="", provider="local", model="m")
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(name="n", provider="local", model="")


def test_it_refuses_a_temperature_out_of_range():
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.create(name="n", provider="local", model="m", temperature=3.5)


def test_messages_have_unique_seq_per_conversation(conversation, agent, user):
    Message.objects.create(conversation=conversation, role="user", content="hi", seq=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="user", content="again", seq=1)
    other = Conversation.objects.create(owner=user)
    Message.objects.create(conversation=other, role="user", content="hi", seq=1)  # another conversation: fine
    Message.objects.create(conversation=conversation, role="system", content="no seq")
    Message.objects.create(conversation=conversation, role="system", content="no seq either")


def test_client_message_id_is_unique_per_conversation(conversation):
    Message.objects.create(conversation=conversation, role="user", content="a", client_message_id="c-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="user", content="b", client_message_id="c-1")


def test_an_agent_message_names_its_agent(conversation, agent):
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(conversation=conversation, role="agent", content="orphan")
    Message.objects.create(conversation=conversation, role="agent", agent=agent, content="fine")


def test_message_enums_are_enforced(conversation):
    for field, value in (("role", "robot"), ("type", "poem"), ("status", "done"), ("opinion", "meh")):
        fields = {"conversation": conversation, "role": "user", "content": "x", field: value}
        with pytest.raises(IntegrityError), transaction.atomic():
            Message.objects.create(**fields)


def test_only_one_run_runs_per_conversation(conversation, agent):
    Run.objects.create(conversation=conversation, agent=agent, status=RunStatus.RUNNING)
    Run.objects.create(conversation=conversation, agent=agent, status=RunStatus.QUEUED)
    with pytest.raises(IntegrityError), transaction.atomic():
        Run.objects.create(conversation=conversation, agent=agent, status=RunStatus.RUNNING)


def test_participants_are_ordered_and_unique(conversation, agent):
    second = Agent.objects.create(name="Critic", provider="local", model="smollm2")
    Participant.objects.create(conversation=conversation, agent=second, role="secondary", position=1)
    assert [p.agent.name for p in conversation.participants.all()] == ["Helper", "Critic"]
    with pytest.raises(IntegrityError), transaction.atomic():
        Participant.objects.create(conversation=conversation, agent=second, position=2)
    third = Agent.objects.create(name="Third", provider="local", model="smollm2")
    with pytest.raises(IntegrityError), transaction.atomic():
        Participant.objects.create(conversation=conversation, agent=third, position=1)


def test_deleting_a_conversation_deletes_its_messages_and_runs(conversation, agent):
    Message.objects.create(conversation=conversation, role="user", content="hi", seq=1)
    Run.objects.create(conversation=conversation, agent=agent)
    conversation.delete()
    assert Message.objects.count() == 0
    assert Run.objects.count() == 0
