"""Insecure direct object references, tried as an attacker with an ordinary account would: mallory
knows the ids of alice's agent, conversation, run and messages (ids leak: screenshots, logs, shared
links) and tries every endpoint that starts, stops, reads or rates something with them.

Every attempt gets the same 404 as an id that does not exist (never 403: no leak of existence),
and alice's data is exactly as it was."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from rest_framework.test import APIClient

from agents.models import Agent
from conversations.models import Conversation, Message, Participant
from core.auth import tokens_issue
from runs.models import Run
from tests.realtime.conftest import make_agent, make_conversation

pytestmark = [pytest.mark.timeout(60)]

MISSING = "00000000-0000-4000-8000-000000000000"


def bearer(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_issue(user)['access_token']}")
    return client


def snapshot() -> dict[str, Any]:
    """Every row an attack could change, as plain values."""
    return {
        "conversations": sorted(
            Conversation.objects.values_list("id", "owner_id", "title", "status", "last_seq", "context")
        ),
        "participants": sorted(Participant.objects.values_list("conversation_id", "agent_id", "role")),
        "messages": sorted(
            Message.objects.values_list(
                "id", "conversation_id", "role", "content", "status", "opinion", "feedback_comment"
            )
        ),
        "runs": sorted(Run.objects.values_list("id", "conversation_id", "status", "cancel_requested")),
        "agents": sorted(Agent.objects.values_list("id", "owner_id", "name", "status")),
    }


@pytest.fixture
def world(user, other_user) -> dict[str, Any]:
    """alice: a private agent, a conversation with a question, a reply and a run still queued.
    mallory: her own agent and conversation. Both may use a shared agent."""
    shared = Agent.objects.create(name="Shared", provider="scripted", model="scripted-1")
    alice_agent = Agent.objects.create(owner=user, name="Alice's", provider="scripted", model="scripted-1")
    mallory_agent = Agent.objects.create(
        owner=other_user, name="Mallory's", provider="scripted", model="scripted-1"
    )
    conversation = make_conversation(user, alice_agent, shared)
    question = Message.objects.create(conversation=conversation, role="user", content="secret?", seq=1)
    reply = Message.objects.create(
        conversation=conversation, role="agent", agent=alice_agent, content="the secret", seq=2
    )
    run = Run.objects.create(conversation=conversation, agent=alice_agent, trigger_message=question)
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=2)
    mallory_conversation = make_conversation(other_user, mallory_agent, shared)
    return {
        "alice_agent": alice_agent,
        "shared": shared,
        "mallory_agent": mallory_agent,
        "conversation": conversation,
        "question": question,
        "reply": reply,
        "run": run,
        "mallory_conversation": mallory_conversation,
    }


def assert_not_found(response: Any) -> dict[str, Any]:
    assert response.status_code == 404, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "not_found", body
    return body


# -- REST ------------------------------------------------------------------------------------------

ATTACKS = {
    "invoke alice's agent": lambda w: ("/api/invoke/", {"agent_id": w["alice_agent"].pk, "message": "hi"}),
    "invoke a shared agent into alice's conversation": lambda w: (
        "/api/invoke/",
        {"agent_id": w["shared"].pk, "message": "hi", "conversation_id": w["conversation"].pk},
    ),
    "invoke alice's agent into alice's conversation": lambda w: (
        "/api/invoke/",
        {"agent_id": w["alice_agent"].pk, "message": "hi", "conversation_id": w["conversation"].pk},
    ),
    "invoke her own agent into alice's conversation (seed 000 spelling)": lambda w: (
        "/api/invoke",
        {"agentId": w["mallory_agent"].pk, "message": "hi", "conversationId": w["conversation"].pk},
    ),
    "run alice's agent": lambda w: (f"/api/agents/{w['alice_agent'].pk}/run/", {"query": "hi"}),
    "run alice's agent in alice's conversation": lambda w: (
        f"/api/agents/{w['alice_agent'].pk}/run/",
        {"query": "hi", "conversation_id": w["conversation"].pk},
    ),
    "run a shared agent in alice's conversation": lambda w: (
        f"/api/agents/{w['shared'].pk}/run/",
        {"query": "hi", "conversation_id": w["conversation"].pk},
    ),
    "stop alice's conversation": lambda w: (f"/api/conversations/{w['conversation'].pk}/stop/", {}),
    "stop alice's run by id": lambda w: (
        f"/api/conversations/{w['conversation'].pk}/stop/",
        {"run_id": w["run"].pk},
    ),
    "stop alice's run through her own conversation": lambda w: (
        f"/api/conversations/{w['mallory_conversation'].pk}/stop/",
        {"run_id": w["run"].pk},
    ),
    "rate alice's reply": lambda w: (
        f"/api/messages/{w['reply'].pk}/feedback/",
        {"rating": "negative", "comment": "pwned"},
    ),
    "rate alice's question": lambda w: (f"/api/messages/{w['question'].pk}/feedback/", {"rating": None}),
}

# The same request with every id of alice's replaced by one that does not exist: the answers match.
MISSING_TWINS = {
    "invoke alice's agent": lambda w: ("/api/invoke/", {"agent_id": MISSING, "message": "hi"}),
    "run alice's agent": lambda w: (f"/api/agents/{MISSING}/run/", {"query": "hi"}),
    "stop alice's conversation": lambda w: (f"/api/conversations/{MISSING}/stop/", {}),
    "rate alice's reply": lambda w: (
        f"/api/messages/{MISSING}/feedback/",
        {"rating": "negative", "comment": "pwned"},
    ),
    "invoke a shared agent into alice's conversation": lambda w: (
        "/api/invoke/",
        {"agent_id": w["shared"].pk, "message": "hi", "conversation_id": MISSING},
    ),
}


def _json(body: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, uuid.UUID) else v for k, v in body.items()}


@pytest.mark.django_db(transaction=True)  # async views: a real transaction per request
@pytest.mark.usefixtures("scripted_provider")
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_mallory_gets_404_and_alices_data_is_unchanged(world, other_user, attack):
    before = snapshot()
    path, body = ATTACKS[attack](world)
    response = bearer(other_user).post(path, _json(body), format="json")
    found = assert_not_found(response)
    assert snapshot() == before
    if attack in MISSING_TWINS:
        twin_path, twin_body = MISSING_TWINS[attack](world)
        twin = assert_not_found(bearer(other_user).post(twin_path, _json(twin_body), format="json"))
        assert (found["detail"], found["code"]) == (twin["detail"], twin["code"])


@pytest.mark.django_db(transaction=True)  # async views: a real transaction per request
def test_mallory_cannot_read_alices_events_over_sse(world, other_user):
    before = snapshot()
    path = f"/api/conversations/{world['conversation'].pk}/events/"
    for query in ("", "?after_seq=0"):
        body = assert_not_found(bearer(other_user).get(path + query))
        missing = assert_not_found(bearer(other_user).get(f"/api/conversations/{MISSING}/events/{query}"))
        assert body["detail"] == missing["detail"]
    assert_not_found(bearer(other_user).get(path, HTTP_LAST_EVENT_ID="0"))
    assert snapshot() == before


@pytest.mark.django_db(transaction=True)  # async views: a real transaction per request
def test_mallory_cannot_read_alices_conversation_or_message_through_the_rest_api(world, other_user):
    mallory = bearer(other_user)
    assert_not_found(mallory.get(f"/api/conversations/{world['conversation'].pk}/"))
    assert_not_found(mallory.get(f"/api/agents/{world['alice_agent'].pk}/"))
    assert_not_found(mallory.get(f"/api/agents/{world['alice_agent'].pk}/status/"))
    listed = mallory.get("/api/conversations/").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert str(world["conversation"].pk) not in {str(row["id"]) for row in rows}


@pytest.mark.django_db(transaction=True)  # async views: a real transaction per request
def test_alice_herself_gets_through_every_door_mallory_was_refused(world, user):
    """The 404s above come from ownership, not from broken endpoints: the owner passes."""
    alice = bearer(user)
    response = alice.post(
        f"/api/messages/{world['reply'].pk}/feedback/", {"rating": "positive"}, format="json"
    )
    assert response.status_code == 200, response.content
    response = alice.post(f"/api/conversations/{world['conversation'].pk}/stop/", {}, format="json")
    assert response.status_code == 200 and response.json()["count"] == 1, response.content
    assert Run.objects.get(pk=world["run"].pk).status == "stopped"


# -- WebSocket -------------------------------------------------------------------------------------


@pytest.fixture
def ws_world(user, other_user) -> dict[str, Any]:
    alice_agent = make_agent(owner=user, name="Alice's", reply="alice only", chunks=2)
    mallory_agent = make_agent(owner=other_user, name="Mallory's", reply="ok", chunks=1)
    conversation = make_conversation(user, alice_agent)
    reply = Message.objects.create(
        conversation=conversation, role="agent", agent=alice_agent, content="the secret", seq=1
    )
    return {
        "alice_agent": alice_agent,
        "conversation": conversation,
        "reply": reply,
        "mallory_conversation": make_conversation(other_user, mallory_agent),
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scripted_provider")
@pytest.mark.parametrize(
    "frame",
    [
        {"type": "initialize", "data": {"conversation_id": "{alice}"}},
        {"type": "initialize", "data": {"sessionId": "{alice}", "last_seq": 0}},
        {"type": "initialize", "sessionId": "{alice}"},  # seed 001: fields at the top level
    ],
    ids=["conversation_id", "sessionId+last_seq", "top-level sessionId"],
)
async def test_initialize_with_alices_conversation_closes_4001(connect, other_user, ws_world, frame):
    before = await database_sync_to_async(snapshot)()
    alice = str(ws_world["conversation"].pk)
    frame = {
        k: ({kk: alice if vv == "{alice}" else vv for kk, vv in v.items()} if isinstance(v, dict) else v)
        for k, v in frame.items()
    }
    frame = {k: alice if v == "{alice}" else v for k, v in frame.items()}
    client = await connect("/ws/agent/", user=other_user)
    assert (await client.recv())["type"] == "connection"
    await client.send(frame)
    assert await client.closed() == 4001
    errors = [f for f in client.frames if f["type"] == "error"]
    assert [e["data"]["code"] for e in errors] == ["not_found"]
    assert not [f for f in client.frames if f["type"] == "session_state"]
    assert await database_sync_to_async(snapshot)() == before


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scripted_provider")
async def test_a_bound_socket_cannot_switch_to_alices_conversation(connect, other_user, ws_world):
    client = await connect(f"/ws/conversations/{ws_world['mallory_conversation'].pk}/", user=other_user)
    await client.until("session_state")
    await client.send({"type": "initialize", "data": {"conversation_id": str(ws_world["conversation"].pk)}})
    assert await client.closed() == 4001
    assert all(
        f["data"]["conversation"]["id"] == str(ws_world["mallory_conversation"].pk)
        for f in client.frames
        if f["type"] == "session_state"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("scripted_provider")
async def test_mallory_cannot_rate_alices_message_or_use_her_agent_over_the_socket(
    connect, other_user, ws_world
):
    before = await database_sync_to_async(snapshot)()
    client = await connect(f"/ws/conversations/{ws_world['mallory_conversation'].pk}/", user=other_user)
    await client.until("session_state")
    await client.send(
        {"type": "feedback", "data": {"messageId": str(ws_world["reply"].pk), "rating": "negative"}}
    )
    assert (await client.until("error"))["data"]["code"] == "not_found"
    await client.send(
        {"type": "user_message", "data": {"content": "hi", "agent_id": str(ws_world["alice_agent"].pk)}}
    )
    error = await client.until("error")
    assert error["data"]["code"] in {"not_found", "validation_error"}, error
    await client.send({"type": "ping"})
    await client.until("pong")
    assert not [f for f in client.frames if f["type"] in {"ack", "run_started"}]
    assert await database_sync_to_async(snapshot)() == before
    await client.close()


@pytest.mark.django_db(transaction=True)  # async views: a real transaction per request
@pytest.mark.parametrize("run_id", ["../../etc/passwd", "not-a-uuid", 12345, MISSING])
def test_a_malformed_or_unknown_run_id_is_a_coded_error_never_a_500(world, user, run_id):
    """A run id that is not a UUID reached the query and answered 500 (and an ``internal`` error
    frame on the socket). Malformed, it is a validation error or an id that does not exist;
    well-formed and unknown, a 404."""
    before = snapshot()
    response = bearer(user).post(
        f"/api/conversations/{world['conversation'].pk}/stop/", {"run_id": run_id}, format="json"
    )
    if run_id == MISSING:
        assert_not_found(response)
    else:
        assert response.status_code in (400, 404), (response.status_code, response.content[:300])
        assert response.json()["code"] in ("validation_error", "not_found")
    assert snapshot() == before
