"""Approvals (SPEC section 11): a run that needs a person's decision pauses durably, stored and
owned by no process; the first approve/deny wins (WebSocket frame or REST), a timeout denies."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator

from tests.factories import make_conversation, token_for
from tests.realtime import scripted

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


def _agent(approval="always", calls=None, **rules):
    from agents.models import Agent
    from agents.services import tool_specs_validate
    from agents.tools import builtin_tool_spec

    spec = {**builtin_tool_spec("current_time"), "approval": approval, **rules}
    return Agent.objects.create(
        name="Careful",
        provider="scripted",
        model="m",
        tools=tool_specs_validate([spec]),
        config={
            "tool_calls": calls or [{"name": "current_time", "arguments": {"timezone": "Europe/Paris"}}],
            "echo_tool_result": True,
            "chunks": 2,
        },
    )


def _run(conversation_id):
    from runs.models import Run

    return Run.objects.get(conversation_id=conversation_id)


def _pending(conversation_id):
    from runs.models import PendingToolCall

    return list(PendingToolCall.objects.filter(conversation_id=conversation_id).order_by("created_at"))


async def _asked(connect, user, **agent_kwargs):
    agent = await database_sync_to_async(_agent)(**agent_kwargs)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "What time is it in Paris?"}})
    call = await client.until("tool_call")
    asked = await client.until("approval_required")
    assert asked["data"]["toolCallId"] == call["data"]["toolCallId"]
    assert asked["data"]["tool"] == "current_time"
    assert asked["data"]["parameters"] == {"timezone": "Europe/Paris"}
    return conversation, client, asked["data"]["toolCallId"]


def _frames(client, kind):
    """The data of every frame of this type the client has read so far."""
    return [f["data"] for f in client.frames if f["type"] == kind]


async def _released(conversation_id):
    """The run is paused: stored as waiting, owned by no process, no task of this process on it."""
    from runs.manager import get_run_manager

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        run = await database_sync_to_async(_run)(conversation_id)
        if run.status == "waiting" and str(run.pk) not in get_run_manager().tasks:
            return run
        assert loop.time() < deadline, run.status
        await asyncio.sleep(0.02)


async def test_an_approved_call_runs_after_the_pause_and_the_reply_goes_on(connect, user, settings):
    from runs.sweeper import sweep_stale_runs

    settings.NEXUS_RUN_HEARTBEAT_SECONDS = 0.1
    settings.NEXUS_RUN_STALE_SECONDS = 1.0
    conversation, client, call_id = await _asked(connect, user)
    run = await _released(conversation.pk)
    assert run.owner == "" and run.heartbeat_at is None
    assert run.paused["calls"][0]["id"] == call_id
    # No heartbeat, and never stale: the sweeper leaves a paused run alone.
    await asyncio.sleep(1.0)
    await sweep_stale_runs()
    assert (await database_sync_to_async(_run)(conversation.pk)).status == "waiting"
    seen_before = len(scripted.SEEN)

    await client.send({"type": "approve", "data": {"toolCallId": call_id}})
    await client.until("run_finished", status="completed")
    [ack] = [a for a in _frames(client, "ack") if "decision" in a]
    assert ack == {"toolCallId": call_id, "decision": "approved", "run_id": str(run.pk)}
    [decided] = _frames(client, "approval_decided")
    assert decided["decision"] == "approved" and decided["approved"] is True
    assert decided["decided_by"] == user.pk
    [result] = _frames(client, "tool_result")
    assert result["is_error"] is False and result["result"]["timezone"] == "Europe/Paris"
    [final] = _frames(client, "agent_message")
    assert final["content"].startswith("Tool said: ") and "Europe/Paris" in final["content"]

    # One run from start to end (the same reply row), asked twice: once for the call, once after.
    run = await database_sync_to_async(_run)(conversation.pk)
    assert run.status == "completed" and str(run.reply_message_id) == final["messageId"]
    assert len(scripted.SEEN) == seen_before + 1
    resumed = scripted.SEEN[-1]
    assert [m.role for m in resumed[-2:]] == ["assistant", "tool"]
    assert resumed[-2].tool_calls[0].id == call_id and resumed[-1].tool_call_id == call_id
    [row] = await database_sync_to_async(_pending)(conversation.pk)
    assert row.status == "approved" and row.decided_by_id == user.pk


async def test_a_denied_call_does_not_run_and_the_model_is_told(connect, user):
    conversation, client, call_id = await _asked(connect, user)
    await _released(conversation.pk)
    await client.send({"type": "deny", "data": {"toolCallId": call_id}})
    await client.until("run_finished", status="completed")
    assert [d["decision"] for d in _frames(client, "approval_decided")] == ["denied"]
    [result] = _frames(client, "tool_result")
    assert result["is_error"] is True and "denied" in result["result"]["error"]
    [final] = _frames(client, "agent_message")
    assert "denied" in final["content"]


async def test_a_call_nobody_decides_is_denied_at_its_timeout(connect, user, settings):
    settings.NEXUS_APPROVAL_TIMEOUT_SECONDS = 0.3
    _conversation, client, call_id = await _asked(connect, user)
    decided = await client.until("approval_decided", timeout=15)
    assert decided["data"]["decision"] == "timed_out" and decided["data"]["decided_by"] is None
    result = await client.until("tool_result")
    assert result["data"]["is_error"] is True and "in time" in result["data"]["result"]["error"]
    await client.until("run_finished", status="completed")
    # too late: the decision was made
    await client.send({"type": "approve", "data": {"toolCallId": call_id}})
    error = await client.until("error")
    assert error["data"]["code"] == "conflict" and error["data"]["details"]["decision"] == "timed_out"


async def test_two_tabs_approving_at_once_make_one_decision(connect, user):
    conversation, tab1, call_id = await _asked(connect, user)
    tab2 = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    state = await tab2.until("session_state")
    assert [p["toolCallId"] for p in state["data"]["pending_approvals"]] == [call_id]
    await asyncio.gather(
        tab1.send({"type": "approve", "data": {"toolCallId": call_id}}),
        tab2.send({"type": "deny", "data": {"toolCallId": call_id}}),
    )

    async def answer(tab):
        while True:
            frame = await tab.recv()
            if frame["type"] in ("ack", "error"):
                return frame

    answers = await asyncio.gather(answer(tab1), answer(tab2))
    assert sorted(a["type"] for a in answers) == ["ack", "error"]
    loser = next(a for a in answers if a["type"] == "error")
    assert loser["data"]["code"] == "conflict"
    winner = next(a for a in answers if a["type"] == "ack")["data"]["decision"]
    await tab1.until("run_finished", status="completed")
    decisions = [f for f in tab1.frames if f["type"] == "approval_decided"]
    results = [f for f in tab1.frames if f["type"] == "tool_result"]
    assert [d["data"]["decision"] for d in decisions] == [winner]
    assert len(results) == 1 and results[0]["data"]["is_error"] is (winner == "denied")
    [row] = await database_sync_to_async(_pending)(conversation.pk)
    assert row.status == winner


async def _post(application, user, path, body):
    token = await database_sync_to_async(token_for)(user)
    communicator = HttpCommunicator(
        application,
        "POST",
        path,
        body=json.dumps(body).encode(),
        headers=[
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
        ],
    )
    response = await communicator.get_response(timeout=10)
    return response["status"], json.loads(response["body"] or b"{}")


async def test_a_rest_decision_wins_once_and_bad_ones_get_coded_errors(
    application, connect, user, other_user
):
    conversation, client, call_id = await _asked(connect, user)
    path = f"/api/conversations/{conversation.pk}/approvals/{call_id}/"
    assert (await _post(application, user, path, {"decision": "maybe"}))[1]["code"] == "validation_error"
    status, body = await _post(application, other_user, path, {"decision": "approve"})
    assert (status, body["code"]) == (404, "not_found")  # another's conversation: as if none
    missing = f"/api/conversations/{conversation.pk}/approvals/nope/"
    assert (await _post(application, user, missing, {"decision": "approve"}))[0] == 404
    status, body = await _post(application, user, path, {"decision": "approve"})
    assert status == 200 and body["decision"] == "approved"
    status, body = await _post(application, user, path, {"decision": "deny"})
    assert (status, body["code"]) == (409, "conflict")
    await client.until("run_finished", status="completed")


async def test_rules_run_refuse_or_ask(connect, user):
    from runs.approvals import tool_policy

    ask = {"approval": "ask", "allow": [{"timezone": "Europe/*"}], "deny": [{"timezone": "*Mars*"}]}
    assert tool_policy(ask, {"timezone": "Europe/Paris"}) == "run"
    assert tool_policy(ask, {"timezone": "Asia/Tokyo"}) == "ask"
    assert tool_policy(ask, {}) == "ask"  # a rule naming an argument the call lacks does not match
    assert tool_policy(ask, {"timezone": "Mars/Base"}) == "deny"
    assert tool_policy({"approval": "always", "allow": [{}]}, {"timezone": "UTC"}) == "ask"
    assert tool_policy({"approval": "never", "deny": [{}]}, {}) == "deny"
    assert tool_policy({"approval": "never"}, {}) == "run" and tool_policy({}, {}) == "run"
    assert tool_policy({"approval": "ask", "allow": [{"n": "[0-9]"}]}, {"n": 7}) == "run"  # as JSON text

    # An allowed call runs without asking; a denied one is refused without asking.
    agent = await database_sync_to_async(_agent)(
        approval="ask",
        allow=[{"timezone": "Europe/*"}],
        deny=[{"timezone": "Asia/*"}],
        calls=[
            {"name": "current_time", "arguments": {"timezone": "Europe/Paris"}},
            {"name": "current_time", "arguments": {"timezone": "Asia/Tokyo"}},
        ],
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Times?"}})
    await client.until("run_finished", status="completed")
    results = [f["data"] for f in client.frames if f["type"] == "tool_result"]
    assert [r["is_error"] for r in results] == [False, True]
    assert "not allowed by this agent's rules" in results[1]["result"]["error"]
    assert not [f for f in client.frames if f["type"] == "approval_required"]
    assert await database_sync_to_async(_pending)(conversation.pk) == []


async def test_the_rest_of_a_round_runs_after_the_call_that_waited(connect, user):
    """Two calls in one reply, the first waits: after the approval both run, in order, and the
    model sees each call answered."""
    conversation, client, call_id = await _asked(
        connect,
        user,
        approval="ask",
        allow=[{"timezone": "UTC"}],
        calls=[
            {"name": "current_time", "arguments": {"timezone": "Europe/Paris"}},
            {"name": "current_time", "arguments": {"timezone": "UTC"}},
        ],
    )
    await _released(conversation.pk)
    await client.send({"type": "approve", "data": {"toolCallId": call_id}})
    await client.until("run_finished", status="completed")
    results = [f["data"] for f in client.frames if f["type"] == "tool_result"]
    assert [r["result"]["timezone"] for r in results] == ["Europe/Paris", "UTC"]
    last = scripted.SEEN[-1]
    assert [m.role for m in last[-4:]] == ["assistant", "tool", "assistant", "tool"]


async def test_a_waiting_run_holds_its_conversation_and_stops_at_once(connect, user):
    conversation, client, call_id = await _asked(connect, user)
    run = await _released(conversation.pk)
    await client.send({"type": "user_message", "data": {"content": "And in Tokyo?"}})
    assert (await client.until("ack"))["data"]["run_id"] != str(run.pk)
    await asyncio.sleep(0.3)
    from runs.models import Run

    statuses = await database_sync_to_async(
        lambda: sorted(Run.objects.filter(conversation=conversation).values_list("status", flat=True))
    )()
    assert statuses == ["queued", "waiting"]  # the second waits behind the paused one
    await client.send({"type": "stop", "data": {"run_id": str(run.pk)}})
    stopped = await client.until("run_finished", run_id=str(run.pk))
    assert stopped["data"]["status"] == "stopped" and stopped["data"]["message_id"]
    await client.until("approval_required")  # the queued run starts, and asks in its turn
    [first, _second] = await database_sync_to_async(_pending)(conversation.pk)
    assert first.status == "cancelled"
    await client.send({"type": "approve", "data": {"toolCallId": call_id}})
    assert (await client.until("error"))["data"]["code"] in ("conflict", "not_found")


async def test_a_client_tool_call_pauses_the_run_too(connect, user):
    from agents.models import Agent

    tool = {
        "name": "browser_timezone",
        "description": "The user's time zone.",
        "parameters": {"type": "object", "properties": {}},
        "execution": "client",
    }
    agent = await database_sync_to_async(Agent.objects.create)(
        name="Asker",
        provider="scripted",
        model="m",
        tools=[tool],
        config={"tool_calls": [{"name": "browser_timezone", "arguments": {}}], "echo_tool_result": True},
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Where am I?"}})
    call = await client.until("tool_call")
    run = await _released(conversation.pk)
    [row] = await database_sync_to_async(_pending)(conversation.pk)
    assert (row.kind, row.status, str(row.run_id)) == ("client", "pending", str(run.pk))
    call_id = call["data"]["toolCallId"]
    await client.send({"type": "approve", "data": {"toolCallId": call_id}})  # not an approval
    assert (await client.until("error"))["data"]["code"] == "not_found"
    await client.send({"type": "tool_result", "data": {"toolCallId": call_id, "result": "Europe/Paris"}})
    await client.until("run_finished", status="completed")
    [final] = _frames(client, "agent_message")
    assert final["content"] == 'Tool said: {"result": "Europe/Paris", "is_error": false}'
    # The model saw the call answered once (the stored answer is not sent beside it).
    assert [m.role for m in scripted.SEEN[-1][-2:]] == ["assistant", "tool"]
    assert len([m for m in scripted.SEEN[-1] if m.role == "tool"]) == 1


def test_tool_specs_take_approval_rules_for_server_tools_only():
    from agents.services import tool_specs_validate
    from core.errors import ValidationFailed

    spec = {"name": "t", "parameters": {"type": "object"}, "approval": "ask", "allow": [{"a": "x*"}]}
    assert tool_specs_validate([spec])[0]["approval"] == "ask"
    assert "approval" not in tool_specs_validate([{"name": "t"}])[0]
    for bad in (
        {**spec, "approval": "sometimes"},
        {**spec, "allow": {"a": "x"}},
        {**spec, "deny": [{"a": 1}]},
        {**spec, "execution": "client"},
    ):
        with pytest.raises(ValidationFailed):
            tool_specs_validate([bad])


async def test_a_run_whose_decider_died_before_waking_it_is_woken_by_the_sweeper(connect, user):
    """The decision is stored but the process that made it died before the wake (here: the pending
    row updated behind the engine's back): the sweeper's housekeeping wakes the run."""
    from runs.models import PendingToolCall
    from runs.sweeper import sweep_stale_runs

    conversation, client, call_id = await _asked(connect, user)
    await _released(conversation.pk)
    await database_sync_to_async(
        lambda: PendingToolCall.objects.filter(tool_call_id=call_id).update(status="approved")
    )()
    await asyncio.sleep(0.5)
    assert (await database_sync_to_async(_run)(conversation.pk)).status == "waiting"
    await sweep_stale_runs(housekeeping=True)
    await client.until("run_finished", status="completed")
    [result] = _frames(client, "tool_result")
    assert result["is_error"] is False and result["result"]["timezone"] == "Europe/Paris"
