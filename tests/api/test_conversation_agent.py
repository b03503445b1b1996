"""POST /api/conversations/{id}/agent/: change who answers a person's conversation.

Owners, outsiders, staff and anonymous callers; agents one may not use, paused agents, agent-agent
sessions; and the history the new agent is given (the old agent's replies are the assistant's turns).
"""

from __future__ import annotations

import pytest

from agents.models import Agent
from conversations.models import Participant
from conversations.services import conversation_create
from runs.history import chat_history
from tests.api.conftest import assert_error, make_conversation

pytestmark = pytest.mark.django_db


def url(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/agent/"


def participants(conversation) -> list[tuple[str, str, int]]:
    rows = Participant.objects.filter(conversation=conversation).order_by("position")
    return [(row.agent.name, row.role, row.position) for row in rows]


def test_the_owner_changes_who_answers_and_the_history_stays(alice, alice_conversation, alice_agent):
    response = alice.post(url(alice_conversation), {"agent_id": str(alice_agent.pk)}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert [(a["agent_id"], a["role"], a["position"]) for a in body["agents"]] == [
        (str(alice_agent.pk), "primary", 0)
    ]
    assert participants(alice_conversation) == [("Alice's agent", "primary", 0)]
    assert alice_conversation.messages.count() == 2

    # The new agent is given the whole history, the old agent's reply as the assistant's turn.
    history = chat_history(conversation=alice_conversation, agent=alice_agent, speakers=[alice_agent])
    assert [(m.role, m.content) for m in history if m.role != "system"] == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
    ]


def test_an_agent_already_in_the_conversation_swaps_places_with_the_primary(
    alice, user, shared_agent, alice_agent
):
    conversation = conversation_create(
        owner=user, participants=[(shared_agent, "primary"), (alice_agent, "secondary")]
    )
    response = alice.post(url(conversation), {"agent_id": str(alice_agent.pk)}, format="json")
    assert response.status_code == 200, response.content
    assert participants(conversation) == [
        ("Alice's agent", "primary", 0),
        ("Shared helper", "secondary", 1),
    ]
    # Back again.
    response = alice.post(url(conversation), {"agent_id": str(shared_agent.pk)}, format="json")
    assert response.status_code == 200, response.content
    assert participants(conversation) == [
        ("Shared helper", "primary", 0),
        ("Alice's agent", "secondary", 1),
    ]


def test_picking_the_agent_who_already_answers_changes_nothing(alice, alice_conversation, shared_agent):
    response = alice.post(url(alice_conversation), {"agent_id": str(shared_agent.pk)}, format="json")
    assert response.status_code == 200
    assert participants(alice_conversation) == [("Shared helper", "primary", 0)]


def test_an_outsider_cannot_change_someone_elses_conversation(mallory, alice_conversation, mallory_agent):
    response = mallory.post(url(alice_conversation), {"agent_id": str(mallory_agent.pk)}, format="json")
    assert_error(response, 404, "not_found")
    assert participants(alice_conversation) == [("Shared helper", "primary", 0)]


def test_an_agent_the_owner_may_not_use_is_refused(alice, alice_conversation, mallory_agent):
    response = alice.post(url(alice_conversation), {"agent_id": str(mallory_agent.pk)}, format="json")
    body = assert_error(response, 400, "validation_error")
    assert "agent_id" in body["errors"]
    assert participants(alice_conversation) == [("Shared helper", "primary", 0)]


def test_anonymous_callers_are_refused(anon, alice_conversation, alice_agent):
    response = anon.post(url(alice_conversation), {"agent_id": str(alice_agent.pk)}, format="json")
    assert response.status_code == 401


def test_staff_may_change_any_conversation(operator, alice_conversation, alice_agent):
    response = operator.post(url(alice_conversation), {"agent_id": str(alice_agent.pk)}, format="json")
    assert response.status_code == 200, response.content
    assert participants(alice_conversation) == [("Alice's agent", "primary", 0)]


@pytest.mark.parametrize("status", ["paused", "error"])
def test_a_paused_or_failing_agent_cannot_take_over(alice, user, alice_conversation, status):
    agent = Agent.objects.create(owner=user, name="Resting", provider="local", model="smollm2", status=status)
    response = alice.post(url(alice_conversation), {"agent_id": str(agent.pk)}, format="json")
    assert_error(response, 409, "agent_unavailable")
    assert participants(alice_conversation) == [("Shared helper", "primary", 0)]


def test_an_agent_agent_session_keeps_its_agents(alice, user, shared_agent, alice_agent):
    conversation = conversation_create(
        owner=user,
        participants=[(shared_agent, "primary"), (alice_agent, "secondary")],
        session_type="agent_agent",
    )
    response = alice.post(url(conversation), {"agent_id": str(alice_agent.pk)}, format="json")
    assert_error(response, 400, "validation_error")
    assert participants(conversation) == [("Shared helper", "primary", 0), ("Alice's agent", "secondary", 1)]


@pytest.mark.parametrize("body", [{}, {"agent_id": "nope"}, {"agent_id": None}, []])
def test_bad_input_gets_a_validation_error(alice, alice_conversation, body):
    response = alice.post(url(alice_conversation), body, format="json")
    assert_error(response, 400, "validation_error")


def test_an_unknown_conversation_is_not_found(alice, user, alice_agent):
    conversation = make_conversation(user, alice_agent)
    missing = f"/api/conversations/{'0' * 8}-0000-0000-0000-{'0' * 12}/agent/"
    response = alice.post(missing, {"agent_id": str(alice_agent.pk)}, format="json")
    assert_error(response, 404, "not_found")
    assert conversation.participants.count() == 1
