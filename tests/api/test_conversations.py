"""Conversations and messages over REST: create (ids and seed-001 mappings), list, history,
rename, delete, feedback; owners, outsiders, staff and anonymous callers."""

from __future__ import annotations

import uuid

import pytest

from agents.models import Agent
from conversations.models import Conversation, Message
from tests.api.conftest import assert_error, make_conversation

pytestmark = pytest.mark.django_db

LIST = "/api/conversations/"


def detail(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/"


def feedback(message) -> str:
    return f"/api/messages/{message.pk}/feedback/"


# --- create -----------------------------------------------------------------------------------


def test_create_with_a_list_of_agent_ids(alice, user, shared_agent, alice_agent):
    payload = {
        "session_type": "agent_agent",
        "agents": [str(shared_agent.pk), str(alice_agent.pk)],
        "title": "Debate",
        "context": {"topic": "tea"},
        "settings": {"max_turns": 4, "goal": "agree"},
    }
    response = alice.post(LIST, payload, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["title"] == "Debate"
    assert body["session_type"] == "agent_agent"
    assert body["status"] == "active"
    assert body["owner_id"] == user.pk
    assert [(a["agent_id"], a["role"], a["position"]) for a in body["agents"]] == [
        (str(shared_agent.pk), "primary", 0),
        (str(alice_agent.pk), "secondary", 1),
    ]
    assert body["context"] == {"topic": "tea"}
    assert body["settings"]["max_turns"] == 4 and body["settings"]["double_text"] == "enqueue"
    assert body["messages"] == []
    assert Conversation.objects.get(pk=body["id"]).owner == user


def test_create_with_the_seed_001_mapping_and_an_inline_agent(alice, user, shared_agent):
    payload = {
        "session_type": "agent_agent",
        "agents": {
            "primary": {"agent_id": str(shared_agent.pk)},
            "secondary": {
                "provider": "ollama",
                "model": "llama3",
                "capabilities": ["conversation"],
                "personality": "helpful and professional",
                "metadata": {"team": "blue"},
            },
        },
    }
    response = alice.post(LIST, payload, format="json")
    assert response.status_code == 201, response.content
    agents = response.json()["agents"]
    assert [a["role"] for a in agents] == ["primary", "secondary"]
    inline = Agent.objects.get(pk=agents[1]["agent_id"])
    assert inline.owner == user
    assert inline.provider == "ollama" and inline.model == "llama3"
    assert inline.personality == "helpful and professional"
    assert inline.capabilities == ["conversation"]
    assert inline.config == {"metadata": {"team": "blue"}}
    assert inline.name == "Secondary (ollama llama3)"


def test_create_a_human_agent_session_with_one_agent(alice, shared_agent):
    response = alice.post(LIST, {"agents": [str(shared_agent.pk)]}, format="json")
    assert response.status_code == 201
    assert response.json()["session_type"] == "human_agent"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "agents"),
        ({"agents": []}, "agents"),
        ({"agents": "abc"}, "agents"),
        ({"agents": [1, 2]}, "agents"),
        ({"agents": ["not-a-uuid"]}, "agents"),
        ({"agents": {"primary": {"provider": "local"}}}, "agents"),
        ({"agents": {"primary": {"provider": "skynet", "model": "x"}}}, "agents"),
        ({"agents": {"primary": {"provider": "local", "model": "x", "colour": "red"}}}, "agents"),
        ({"agents": {"primary": {"provider": "local", "model": "x", "config": {"api_key": "sk"}}}}, "agents"),
        ({"agents": {"primary": {"provider": "local", "model": "x", "metadata": {"token": "t"}}}}, "agents"),
        ({"agents": {"primary": 5}}, "agents"),
        ({"session_type": "agent_agent", "agents": "SHARED"}, "agents"),
        ({"session_type": "group", "agents": "SHARED"}, "session_type"),
        ({"agents": "SHARED", "title": "x" * 201}, "title"),
        ({"agents": "SHARED", "context": "text"}, "context"),
        ({"agents": "SHARED", "context": {"note": "nul\x00"}}, "context"),
        ({"agents": {"primary": {"provider": "local", "model": "x", "metadata": {"k\x00": 1}}}}, "agents"),
        ({"agents": "SHARED", "settings": {"max_turns": 0}}, "settings"),
        ({"agents": "SHARED", "settings": {"double_text": "yell"}}, "settings"),
        ({"agents": "SHARED", "settings": {"colour": "red"}}, "settings"),
    ],
)
def test_create_refuses_bad_input_with_field_errors(alice, shared_agent, payload, field):
    if payload.get("agents") == "SHARED":
        payload = {**payload, "agents": [str(shared_agent.pk)]}
    body = assert_error(alice.post(LIST, payload, format="json"), 400, "validation_error")
    assert field in body["errors"], body
    assert Conversation.objects.count() == 0
    assert Agent.objects.count() == 1  # no inline agent was left behind


def test_the_same_agent_twice_is_refused(alice, shared_agent):
    body = assert_error(alice.post(LIST, {"agents": [str(shared_agent.pk)] * 2}, format="json"), 400)
    assert "agents" in body["errors"]


def test_another_users_agent_cannot_join_my_conversation(alice, mallory_agent):
    body = assert_error(alice.post(LIST, {"agents": [str(mallory_agent.pk)]}, format="json"), 400)
    assert "not found" in body["errors"]["agents"][0]
    body = assert_error(
        alice.post(LIST, {"agents": {"primary": {"agent_id": str(mallory_agent.pk)}}}, format="json"), 400
    )
    assert Conversation.objects.count() == 0


def test_a_failed_create_leaves_no_inline_agent_behind(alice, db):
    payload = {
        "session_type": "agent_agent",
        "agents": {
            "primary": {"provider": "local", "model": "a"},
            "secondary": {"provider": "local", "model": "b", "temperature": 9},
        },
    }
    assert_error(alice.post(LIST, payload, format="json"), 400)
    assert Agent.objects.count() == 0


def test_create_needs_authentication(anon, shared_agent):
    assert_error(anon.post(LIST, {"agents": [str(shared_agent.pk)]}, format="json"), 401)


def test_conversation_creation_is_throttled_per_user(alice, mallory, shared_agent, throttle_rate):
    throttle_rate("conversation_create", "2/min")
    payload = {"agents": [str(shared_agent.pk)]}
    assert alice.post(LIST, payload, format="json").status_code == 201
    assert alice.post(LIST, payload, format="json").status_code == 201
    response = alice.post(LIST, payload, format="json")
    assert_error(response, 429, "rate_limited")
    assert int(response["Retry-After"]) >= 1
    assert alice.get(LIST).status_code == 200  # reads have their own budget
    assert mallory.post(LIST, payload, format="json").status_code == 201


# --- list -------------------------------------------------------------------------------------


def test_list_shows_my_conversations_newest_first(alice, user, other_user, shared_agent):
    old = make_conversation(user, shared_agent, title="old")
    new = make_conversation(user, shared_agent, title="new")
    make_conversation(other_user, shared_agent, title="not mine")
    Conversation.objects.filter(pk=old.pk).update(updated_at=new.updated_at.replace(year=2020))
    body = alice.get(LIST).json()
    assert [row["title"] for row in body["results"]] == ["new", "old"]
    assert body["count"] == 2
    assert body["results"][0]["agents"][0]["name"] == "Shared helper"
    assert "messages" not in body["results"][0]


def test_list_is_paginated(alice, user, shared_agent):
    for index in range(23):
        make_conversation(user, shared_agent, title=f"c{index}")
    first = alice.get(LIST).json()
    assert first["count"] == 23 and len(first["results"]) == 20
    assert len(alice.get(LIST, {"page": 2}).json()["results"]) == 3
    assert_error(alice.get(LIST, {"page": "last-but-one"}), 404)


def test_staff_list_every_conversation(operator, alice_conversation, mallory_conversation):
    assert operator.get(LIST).json()["count"] == 2


def test_list_needs_authentication(anon, db):
    assert_error(anon.get(LIST), 401)


def test_conversation_reads_are_throttled_per_user(alice, mallory, alice_conversation, throttle_rate):
    throttle_rate("conversation_read", "2/min")
    assert alice.get(LIST).status_code == 200
    assert alice.get(detail(alice_conversation)).status_code == 200
    assert_error(alice.get(LIST), 429, "rate_limited")
    assert_error(alice.get(detail(alice_conversation)), 429)
    assert mallory.get(LIST).status_code == 200


# --- retrieve (history) -----------------------------------------------------------------------


def test_detail_has_the_history_oldest_first(alice, alice_conversation):
    response = alice.get(detail(alice_conversation))
    assert response.status_code == 200
    body = response.json()
    assert body["title"] == "Alice's chat"
    assert [(m["role"], m["content"], m["seq"]) for m in body["messages"]] == [
        ("user", "What is the capital of France?", 1),
        ("agent", "Paris.", 2),
    ]
    agent_message = body["messages"][1]
    assert agent_message["agent_name"] == "Shared helper"
    assert agent_message["opinion"] is None
    assert agent_message["conversation_id"] == str(alice_conversation.pk)


def test_detail_history_can_be_limited_and_resumed(alice, user, shared_agent):
    conversation = make_conversation(user, shared_agent, messages=tuple(f"m{i}" for i in range(1, 11)))
    recent = alice.get(detail(conversation), {"limit": 3}).json()["messages"]
    assert [m["content"] for m in recent] == ["m8", "m9", "m10"]
    after = alice.get(detail(conversation), {"after_seq": 8}).json()["messages"]
    assert [m["content"] for m in after] == ["m9", "m10"]
    body = assert_error(alice.get(detail(conversation), {"limit": 0}), 400)
    assert "limit" in body["errors"]


def test_another_users_conversation_is_404_for_every_method(mallory, alice_conversation):
    for method in ("get", "patch", "delete"):
        response = getattr(mallory, method)(detail(alice_conversation), {"title": "mine"}, format="json")
        body = assert_error(response, 404, "not_found")
        assert "Alice" not in body["detail"]
    response = mallory.post(detail(alice_conversation) + "generate-title/")
    assert_error(response, 404)
    alice_conversation.refresh_from_db()
    assert alice_conversation.title == "Alice's chat"


def test_an_unknown_conversation_is_404(alice, db):
    assert_error(alice.get(f"/api/conversations/{uuid.uuid4()}/"), 404)


def test_staff_read_any_conversation(operator, alice_conversation):
    assert len(operator.get(detail(alice_conversation)).json()["messages"]) == 2


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_detail_needs_authentication(anon, alice_conversation, method):
    assert_error(getattr(anon, method)(detail(alice_conversation)), 401)


# --- rename, delete ---------------------------------------------------------------------------


def test_owner_renames_a_conversation(alice, alice_conversation):
    response = alice.patch(detail(alice_conversation), {"title": "  Geography  "}, format="json")
    assert response.status_code == 200
    assert response.json()["title"] == "Geography"
    alice_conversation.refresh_from_db()
    assert alice_conversation.title == "Geography"


@pytest.mark.parametrize("payload", [{"title": ""}, {"title": "   "}, {"title": "x" * 201}, {"title": None}])
def test_rename_refuses_a_bad_title(alice, alice_conversation, payload):
    body = assert_error(
        alice.patch(detail(alice_conversation), payload, format="json"), 400, "validation_error"
    )
    assert "title" in body["errors"]


def test_staff_rename_any_conversation(operator, alice_conversation):
    assert (
        operator.patch(detail(alice_conversation), {"title": "Moderated"}, format="json").status_code == 200
    )


def test_owner_deletes_a_conversation_and_its_messages(alice, alice_conversation):
    response = alice.delete(detail(alice_conversation))
    assert response.status_code == 204
    assert response.content == b""
    assert not Conversation.objects.filter(pk=alice_conversation.pk).exists()
    assert not Message.objects.filter(conversation_id=alice_conversation.pk).exists()
    assert_error(alice.get(detail(alice_conversation)), 404)


def test_staff_delete_any_conversation(operator, mallory_conversation):
    assert operator.delete(detail(mallory_conversation)).status_code == 204


# --- feedback ---------------------------------------------------------------------------------


def _agent_message(conversation):
    return conversation.messages.get(role="agent")


def test_feedback_rates_and_clears_a_message(alice, alice_conversation):
    message = _agent_message(alice_conversation)
    response = alice.post(feedback(message), {"rating": "positive", "comment": "spot on"}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "id": str(message.pk),
        "conversation_id": str(alice_conversation.pk),
        "opinion": "positive",
        "feedback_comment": "spot on",
    }
    message.refresh_from_db()
    assert message.opinion == "positive" and message.feedback_comment == "spot on"
    assert alice.post(feedback(message), {"rating": None}, format="json").status_code == 200
    message.refresh_from_db()
    assert message.opinion is None and message.feedback_comment == ""
    history = alice.get(detail(alice_conversation)).json()["messages"]
    assert history[1]["opinion"] is None


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "rating"),
        ({"rating": "meh"}, "rating"),
        ({"rating": "negative", "comment": "x" * 4001}, "comment"),
    ],
)
def test_feedback_refuses_bad_input(alice, alice_conversation, payload, field):
    body = assert_error(alice.post(feedback(_agent_message(alice_conversation)), payload, format="json"), 400)
    assert field in body["errors"]


def test_feedback_on_another_users_message_is_404(mallory, alice_conversation):
    message = _agent_message(alice_conversation)
    assert_error(mallory.post(feedback(message), {"rating": "negative"}, format="json"), 404, "not_found")
    message.refresh_from_db()
    assert message.opinion is None


def test_feedback_on_an_unknown_message_is_404(alice, db):
    assert_error(alice.post(f"/api/messages/{uuid.uuid4()}/feedback/", {"rating": None}, format="json"), 404)


def test_feedback_needs_authentication(anon, alice_conversation):
    assert_error(
        anon.post(feedback(_agent_message(alice_conversation)), {"rating": None}, format="json"), 401
    )


def test_staff_give_feedback_on_any_message(operator, alice_conversation):
    message = _agent_message(alice_conversation)
    assert operator.post(feedback(message), {"rating": "negative"}, format="json").status_code == 200
