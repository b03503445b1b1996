"""Agent-to-agent sessions on the run engine (SPEC section 7), with the scripted provider."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_agent, make_conversation
from tests.realtime import scripted
from tests.waiting import engine_quiet, eventually

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


def _session(user, settings, **configs):
    alpha = make_agent(name="Alpha", **configs.get("alpha", {"reply": "Alpha speaks.", "chunks": 2}))
    beta = make_agent(name="Beta", **configs.get("beta", {"reply": "Beta answers.", "chunks": 2}))
    return make_conversation(user, alpha, beta, session_type="agent_agent", settings=settings), alpha, beta


def _turns(conversation_id):
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, role="agent", type="message")
        .order_by("seq")
        .values_list("agent__name", "content", "status")
    )


def _status(conversation_id):
    from conversations.models import Conversation

    return Conversation.objects.get(pk=conversation_id).status


async def _run_until_info(client, timeout=20):
    while True:
        frame = await client.recv(timeout=timeout)
        if frame["type"] == "info" and frame["data"]["code"] in {
            "turn_limit_reached",
            "goal_reached",
            "budget_exhausted",
        }:
            return frame


async def test_a_session_runs_exactly_max_turns_alternating(connect, user):
    conversation, _, _ = await database_sync_to_async(_session)(user, {"max_turns": 4})
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Discuss the weather."}})
    info = await _run_until_info(client)
    assert info["data"]["code"] == "turn_limit_reached"
    turns = await database_sync_to_async(_turns)(conversation.pk)
    assert [name for name, _, _ in turns] == ["Alpha", "Beta", "Alpha", "Beta"]
    assert await database_sync_to_async(_status)(conversation.pk) == "completed"
    await engine_quiet()
    assert len(await database_sync_to_async(_turns)(conversation.pk)) == 4  # no extra turn
    # Each agent saw the other's turn as the other party, by name.
    beta_view = scripted.SEEN[1]
    assert any(m.role == "user" and m.content == "Alpha: Alpha speaks." for m in beta_view)
    await client.close()


async def test_the_termination_phrase_ends_the_session_early(connect, user):
    conversation, _, _ = await database_sync_to_async(_session)(
        user,
        {"max_turns": 10, "termination_phrase": "DEAL"},
        beta={"reply": "Fine, DEAL.", "chunks": 1},
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Negotiate."}})
    info = await _run_until_info(client)
    assert info["data"]["code"] == "goal_reached"
    assert len(await database_sync_to_async(_turns)(conversation.pk)) == 2


async def test_a_token_budget_ends_the_session(connect, user):
    conversation, _, _ = await database_sync_to_async(_session)(user, {"max_turns": 50, "token_budget": 10})
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Go."}})
    info = await _run_until_info(client)
    assert info["data"]["code"] == "budget_exhausted"
    assert len(await database_sync_to_async(_turns)(conversation.pk)) < 50


async def test_cooldown_is_announced_between_turns(connect, user):
    conversation, _, _ = await database_sync_to_async(_session)(
        user, {"max_turns": 2, "cooldown_seconds": 0.3}
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Go."}})
    cooldown = await client.until("cooldown")
    assert cooldown["data"]["until"] and cooldown["data"]["agent_id"]
    await _run_until_info(client)


async def test_an_interjection_reaches_the_next_agents_context(connect, user):
    conversation, _, _ = await database_sync_to_async(_session)(
        user, {"max_turns": 3}, alpha={"reply": "a " * 40, "chunks": 40, "delay": 0.02}
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Start."}})
    await client.until("streaming_chunk")
    await client.send({"type": "user_message", "data": {"content": "Please mention cats."}})
    await client.until("ack")
    await _run_until_info(client)
    beta_view = scripted.SEEN[1]
    assert any("Please mention cats." in m.content for m in beta_view)
    assert len(await database_sync_to_async(_turns)(conversation.pk)) == 3


async def test_stop_cuts_the_turn_short_and_a_message_resumes_the_session(connect, user):
    # Alpha's turn would stream for 200 x 50 ms = 10 s: a stop that ends it at once cuts the reply
    # short and closes the provider's stream (observed outcomes, not a measured time).
    conversation, _, _ = await database_sync_to_async(_session)(
        user, {"max_turns": 6}, alpha={"reply": "x" * 200, "chunks": 200, "delay": 0.05}
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Start."}})
    await client.until("streaming_chunk")
    await client.send({"type": "stop"})
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "stopped"
    assert len(scripted.CLOSED) == 1  # the provider's stream was cancelled, not read to its end
    await engine_quiet()
    assert await database_sync_to_async(_status)(conversation.pk) == "stopped"
    turns = await database_sync_to_async(_turns)(conversation.pk)
    assert len(turns) == 1 and len(turns[0][1]) < 100  # cut short: less than half of it streamed
    await client.send({"type": "user_message", "data": {"content": "Carry on, Beta."}})
    started = await client.until("run_started")
    assert started["data"]["agent_id"] != finished["data"]["agent_id"]  # Beta's turn next
    await client.send({"type": "stop"})
    await client.until("run_finished")


async def test_a_duplicate_dispatch_past_the_limit_runs_no_extra_turn(connect, user):
    """Runaway protection lives in the claim: a redelivered or restarted dispatch cannot add turns."""
    from runs.dispatch import dispatch_run
    from runs.models import Run

    conversation, alpha, _ = await database_sync_to_async(_session)(user, {"max_turns": 2})
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Go."}})
    await _run_until_info(client)
    extra = await database_sync_to_async(Run.objects.create)(conversation=conversation, agent=alpha)
    await dispatch_run(extra.pk)
    await engine_quiet()
    await database_sync_to_async(extra.refresh_from_db)()
    assert extra.status == "stopped"
    assert len(await database_sync_to_async(_turns)(conversation.pk)) == 2


async def _post_as(user, path, body):
    """A REST call the way daphne makes it: the sync DRF view in Django's database thread, its
    ``async_to_sync`` calls back on this event loop (which owns inline runs)."""
    from rest_framework.test import APIClient

    from tests.factories import token_for

    def post():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        return client.post(path, body, format="json")

    return await database_sync_to_async(post)()


async def test_a_session_created_over_rest_with_an_opening_message_starts_by_itself(user):
    """REST clients start a session in one request: ``settings.opening_message`` is posted as the
    creator's message and the agents take their turns; the same request again starts nothing twice."""
    from conversations.models import Message

    alpha = await database_sync_to_async(make_agent)(owner=user, name="Alpha", reply="Alpha speaks.")
    beta = await database_sync_to_async(make_agent)(owner=user, name="Beta", reply="Beta answers.")
    response = await _post_as(
        user,
        "/api/conversations/",
        {
            "session_type": "agent_agent",
            "agents": [str(alpha.pk), str(beta.pk)],
            "settings": {"max_turns": 2, "opening_message": "Plan a picnic."},
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert [m["content"] for m in body["messages"]] == ["Plan a picnic."]
    await eventually(lambda: _status(body["id"]), until=lambda status: status == "completed")
    turns = await database_sync_to_async(_turns)(body["id"])
    assert [(name, content) for name, content, _ in turns] == [
        ("Alpha", "Alpha speaks."),
        ("Beta", "Beta answers."),
    ]
    assert scripted.SEEN[0][-1].content.endswith("Plan a picnic.")
    user_messages = await database_sync_to_async(
        Message.objects.filter(conversation_id=body["id"], role="user").count
    )()
    assert user_messages == 1


async def test_a_session_created_without_an_opening_waits_for_the_first_message(user):
    from runs.models import Run

    alpha = await database_sync_to_async(make_agent)(owner=user, name="Alpha")
    beta = await database_sync_to_async(make_agent)(owner=user, name="Beta")
    response = await _post_as(
        user,
        "/api/conversations/",
        {"session_type": "agent_agent", "agents": [str(alpha.pk), str(beta.pk)], "settings": {"goal": "x"}},
    )
    assert response.status_code == 201
    assert response.json()["messages"] == []
    await engine_quiet()
    runs = await database_sync_to_async(Run.objects.filter(conversation_id=response.json()["id"]).count)()
    assert runs == 0  # no run was queued or started, here or in a worker
    assert await database_sync_to_async(_turns)(response.json()["id"]) == []
