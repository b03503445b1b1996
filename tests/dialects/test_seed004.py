"""Seed 004's client, unchanged, against real daphne and a loopback fake OpenAI server.

It connects to ``/api/agent`` with ``Authorization: Bearer``, sends ``initialize`` with its own
``sessionId`` ("session-123") and context, then ``user_message``, and reads ``streaming_chunk``
and ``agent_message`` frames, each carrying the ``sessionId`` (docs/dialects.md, "Seed 004").
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.fakes.process import FakeServerProcess
from tests.fakes.script import FakeToolCall, Reply
from tests.realtime_procs.cluster import Cluster, Socket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SESSION = "session-123"
REPLY = "Here are the portfolios with their current holdings, as you asked."
ALLOWED = ["gpt-4", "gpt-3.5-turbo"]
CONTEXT = {
    "currentPage": "visual-data-modeler",
    "selectedTables": ["investment.portfolios"],
    "workspaceContext": {"organizationId": "org-uuid", "teamId": "team-uuid", "userId": "user-uuid"},
}


@pytest.fixture(scope="module")
def fake_openai():
    with FakeServerProcess("openai") as fake:
        yield fake


@pytest.fixture(scope="module", params=["embedded", "workers"])
def nexus(request, tmp_path_factory):
    """Nexus as it runs: ``embedded`` (one daphne, runs inline, SQLite) and ``workers`` (daphne and
    a run worker sharing Redis and PostgreSQL, as docker-compose.yml runs it)."""
    tmp = tmp_path_factory.mktemp(f"seed004-{request.param}")
    if request.param == "embedded":
        cluster = Cluster(tmp, None)
        topology = {"webs": 1, "workers": 0}
    else:
        redis_url = request.getfixturevalue("redis_server_url")
        cluster = Cluster(tmp, redis_url, database_url=request.getfixturevalue("postgres_url"))
        topology = {"webs": 1, "workers": 1}
    try:
        cluster.start(**topology)
        yield cluster
    finally:
        cluster.stop()


async def _user_with_agent(
    nexus: Cluster, fake: FakeServerProcess, tools: list[dict] | None = None
) -> tuple[int, str, str]:
    """(user id, token, agent id): a user whose only agent streams from the fake OpenAI server and
    lets sessions choose the seed's models."""
    user, token = await nexus.user()
    agent = await nexus.db.acall(
        "agent",
        owner_id=user,
        provider="openai",
        model="gpt-4o-mini",
        config={"allowed_models": ALLOWED},
        base_url=fake.base_url,
        tools=tools,
    )
    return user, token, agent


async def _open(nexus: Cluster, token: str) -> Socket:
    socket = await Socket.open(nexus.ws("/api/agent"), token)  # the seed's path and auth, as written
    connection = await socket.until("connection")
    assert connection["data"]["status"] == "connected"
    assert connection["data"]["sessionId"] is None  # not bound before initialize
    return socket


async def _initialize(socket: Socket, session_id: str, **extra) -> dict:
    await socket.send(
        {"type": "initialize", "data": {"sessionId": session_id, "context": {**CONTEXT, **extra}}}
    )
    return await socket.until("session_state")


def _chat_requests(fake: FakeServerProcess) -> list[dict]:
    return [r.json for r in fake.requests if r.path == "/v1/chat/completions"]


async def test_initialize_with_its_own_session_id_then_a_streamed_reply_carrying_it(nexus, fake_openai):
    fake_openai.script(Reply(text=REPLY, chunks=6))
    _, token, agent = await _user_with_agent(nexus, fake_openai)
    socket = await _open(nexus, token)
    try:
        state = await _initialize(socket, SESSION, preferences={"model": "gpt-4", "temperature": 0.3})
        assert state["data"]["sessionId"] == SESSION
        conversation_id = state["data"]["conversation"]["id"]
        assert uuid.UUID(conversation_id)  # the conversation keeps a UUID of its own
        assert state["data"]["conversation"]["settings"]["model"] == "gpt-4"
        assert state["data"]["conversation"]["settings"]["temperature"] == 0.3
        assert state["data"]["conversation"]["context"]["currentPage"] == "visual-data-modeler"
        assert [a["id"] for a in state["data"]["agents"]] == [agent]

        await socket.send(
            {
                "type": "user_message",
                "data": {
                    "sessionId": SESSION,
                    "content": "Show me all portfolios with their current holdings",
                    "context": {
                        "selectedTables": ["investment.portfolios", "investment.holdings"],
                        "filters": {},
                    },
                },
            }
        )
        ack = await socket.until("ack")
        assert ack["data"]["sessionId"] == SESSION
        final = await socket.until("agent_message", timeout=20)
        frames = socket.frames[socket.frames.index(ack) :]
        chunks = [f for f in frames if f["type"] == "streaming_chunk"]
        assert len(chunks) >= 2
        message_id = final["data"]["messageId"]
        for chunk in chunks:  # every field the seed documents for a streaming_chunk
            assert chunk["data"]["sessionId"] == SESSION
            assert chunk["data"]["messageId"] == message_id
            assert isinstance(chunk["data"]["chunk"], str)
            assert isinstance(chunk["data"]["isDone"], bool)
        assert [c["data"]["isDone"] for c in chunks][-1] is True
        assert not any(c["data"]["isDone"] for c in chunks[:-1])
        assert "".join(c["data"]["chunk"] for c in chunks) == REPLY
        # agent_message: sessionId, messageId, content, context
        assert final["data"]["sessionId"] == SESSION
        assert final["data"]["content"] == REPLY
        assert final["data"]["context"] == {}
        assert uuid.UUID(message_id)
        assert all(f["data"]["sessionId"] == SESSION for f in frames)  # every frame, not only those

        finished = await socket.until("run_finished", timeout=20)
        assert finished["data"]["status"] == "completed"
        assert finished["data"]["sessionId"] == SESSION
        # the session's preferences reached the provider: the agent allows gpt-4
        request = _chat_requests(fake_openai)[-1]
        assert request["model"] == "gpt-4"
        assert request["temperature"] == 0.3
        stored = await nexus.db.acall("message", message_id=message_id)
        assert stored["content"] == REPLY
        assert stored["metadata"]["model"] == "gpt-4"

        # ping, as the seed's client sends it every 30 s
        await socket.send({"type": "ping"})
        pong = await socket.until("pong")
        assert pong["data"]["sessionId"] == SESSION
    finally:
        await socket.close()

    # Reconnecting with the same sessionId binds the same conversation, with its messages.
    again = await _open(nexus, token)
    try:
        state = await _initialize(again, SESSION)
        assert state["data"]["conversation"]["id"] == conversation_id
        assert [m["content"] for m in state["data"]["messages"]][-1] == REPLY
        assert state["data"]["sessionId"] == SESSION
    finally:
        await again.close()


async def test_the_same_session_id_by_another_user_is_another_conversation(nexus, fake_openai):
    fake_openai.script(Reply(text="First user's answer."))
    _, token_a, _ = await _user_with_agent(nexus, fake_openai)
    _, token_b, agent_b = await _user_with_agent(nexus, fake_openai)
    a = await _open(nexus, token_a)
    try:
        state_a = await _initialize(a, SESSION)
        await a.send({"type": "user_message", "data": {"sessionId": SESSION, "content": "Mine."}})
        await a.until("run_finished", timeout=20)
    finally:
        await a.close()
    conversation_a = state_a["data"]["conversation"]["id"]

    b = await _open(nexus, token_b)
    try:
        state_b = await _initialize(b, SESSION)
        assert state_b["data"]["sessionId"] == SESSION
        assert state_b["data"]["conversation"]["id"] != conversation_a
        assert state_b["data"]["messages"] == []
        assert [x["id"] for x in state_b["data"]["agents"]] == [agent_b]
        # the first user's conversation UUID as a sessionId: a new session of B's, never A's,
        # and no refusal that would tell B it exists
        state_uuid = await _initialize(b, conversation_a)
        assert state_uuid["data"]["sessionId"] == conversation_a
        assert state_uuid["data"]["conversation"]["id"] not in {
            conversation_a,
            state_b["data"]["conversation"]["id"],
        }
        assert state_uuid["data"]["messages"] == []
        assert not [f for f in b.frames if f["type"] == "error"]
    finally:
        await b.close()

    # B's "session-123" kept its own id and stays B's
    b2 = await _open(nexus, token_b)
    try:
        assert (await _initialize(b2, SESSION))["data"]["conversation"]["id"] == state_b["data"][
            "conversation"
        ]["id"]
    finally:
        await b2.close()


async def test_a_conversation_uuid_of_the_users_own_binds_that_conversation(nexus, fake_openai):
    user, token, agent = await _user_with_agent(nexus, fake_openai)
    conversation = await nexus.db.acall("conversation", owner_id=user, agent_ids=[agent])
    socket = await _open(nexus, token)
    try:
        state = await _initialize(socket, conversation)
        assert state["data"]["conversation"]["id"] == conversation
        assert state["data"]["sessionId"] == conversation
    finally:
        await socket.close()


async def test_stop_and_resume_from_a_seed_004_socket(nexus, fake_openai):
    text = " ".join(f"word{i}" for i in range(300))
    fake_openai.script(Reply(text=text, tokens_per_s=40))
    _, token, _ = await _user_with_agent(nexus, fake_openai)
    first = await _open(nexus, token)
    try:
        await _initialize(first, "session-stop")
        await first.send({"type": "user_message", "data": {"sessionId": "session-stop", "content": "Go on."}})
        run_id = (await first.until("ack"))["data"]["run_id"]
        for _ in range(5):
            await first.until("streaming_chunk")
        seen = first.events()[-1]["seq"]
        await first.send({"type": "stop", "data": {"sessionId": "session-stop"}})
        finished = await first.until("run_finished", timeout=5, run_id=run_id)
        assert finished["data"]["status"] == "stopped"
        assert finished["data"]["sessionId"] == "session-stop"
        stopped = next(f for f in first.frames if f["type"] == "agent_message")
        assert stopped["data"]["status"] == "stopped"
        assert stopped["data"]["sessionId"] == "session-stop"
        last = first.events()[-1]["seq"]
    finally:
        await first.close()

    # Another socket resumes after what the first one had seen: the same events, seq by seq.
    second = await _open(nexus, token)
    try:
        await second.send(
            {"type": "initialize", "data": {"sessionId": "session-stop", "context": {}, "lastSeq": seen}}
        )
        await second.until("session_state")
        await second.until("run_finished", timeout=10, run_id=run_id)
        replayed = second.events()
        assert [e["seq"] for e in replayed] == list(range(seen + 1, last + 1))
        originals = {e["seq"]: e for e in first.events()}
        for evt in replayed:
            assert evt["data"]["sessionId"] == "session-stop"
            assert evt["type"] == originals[evt["seq"]]["type"]
        # and the resume frame on a bound socket
        await second.send({"type": "resume", "data": {"sessionId": "session-stop", "last_seq": seen}})
        await asyncio.sleep(0.5)
        await second.send({"type": "ping"})
        await second.until("pong")
        # already sent on this socket: nothing twice
        assert [e["seq"] for e in second.events()] == list(range(seen + 1, last + 1))
    finally:
        await second.close()


async def test_preferences_an_agent_does_not_allow_are_refused_with_a_clear_error(nexus, fake_openai):
    _, token, _ = await _user_with_agent(nexus, fake_openai)
    socket = await _open(nexus, token)
    try:
        await socket.send(
            {
                "type": "initialize",
                "data": {"sessionId": "session-pref", "context": {"preferences": {"model": "claude-3-opus"}}},
            }
        )
        error = await socket.until("error")
        assert error["data"]["code"] == "validation_error"
        assert error["data"]["sessionId"] == "session-pref"
        assert error["data"]["details"]["allowed_models"] == ["gpt-4o-mini", *ALLOWED]
        await socket.send(
            {
                "type": "initialize",
                "data": {"sessionId": "session-pref", "context": {"preferences": {"temperature": 3}}},
            }
        )
        error = await socket.until("error")
        assert error["data"]["code"] == "validation_error"
        assert "temperature" in error["data"]["details"]["settings"]
        await socket.send({"type": "initialize", "data": {"sessionId": "session-pref", "preferences": "hot"}})
        error = await socket.until("error")
        assert error["data"]["details"] == {"preferences": ["Expected an object."]}
        # nothing was bound or created by a refused initialize
        await socket.send({"type": "initialize", "data": {"sessionId": "session-pref"}})
        state = await socket.until("session_state")
        assert state["data"]["conversation"]["settings"].get("model") is None
        # a frame naming another session than the bound one is refused
        await socket.send({"type": "user_message", "data": {"sessionId": "session-other", "content": "Hi"}})
        error = await socket.until("error")
        assert error["data"]["code"] == "validation_error"
        assert error["data"]["sessionId"] == "session-pref"
    finally:
        await socket.close()


async def test_a_user_message_naming_its_session_binds_it_without_initialize(nexus, fake_openai):
    fake_openai.script(Reply(text="Bound by the message."))
    _, token, _ = await _user_with_agent(nexus, fake_openai)
    socket = await _open(nexus, token)
    try:
        await socket.send(
            {"type": "user_message", "data": {"sessionId": "session-direct", "content": "Hello"}}
        )
        state = await socket.until("session_state")
        assert state["data"]["sessionId"] == "session-direct"
        final = await socket.until("agent_message", timeout=20)
        assert final["data"]["content"] == "Bound by the message."
        assert final["data"]["sessionId"] == "session-direct"
    finally:
        await socket.close()


async def test_without_a_token_the_socket_closes_4003(nexus):
    socket = await Socket.open(nexus.ws("/api/agent"))
    assert await socket.close_code() == 4003
    assert socket.frames[-1]["type"] == "error"
    assert "sessionId" in socket.frames[-1]["data"]


async def test_a_message_naming_no_session_before_initialize_starts_one_under_its_uuid(nexus, fake_openai):
    fake_openai.script(Reply(text="A new session."))
    _, token, _ = await _user_with_agent(nexus, fake_openai)
    socket = await _open(nexus, token)
    try:
        await socket.send({"type": "user_message", "data": {"content": "Hello"}})
        state = await socket.until("session_state")
        session_id = state["data"]["sessionId"]
        assert session_id == state["data"]["conversation"]["id"]
        final = await socket.until("agent_message", timeout=20)
        assert final["data"]["content"] == "A new session."
        assert final["data"]["sessionId"] == session_id
    finally:
        await socket.close()


MODELER = {
    "name": "data_modeler_control",
    "description": "Control the visual data modeler.",
    "parameters": {
        "type": "object",
        "properties": {"action": {"type": "string"}, "table": {"type": "string"}},
        "required": ["action"],
    },
    "execution": "client",
}


async def test_a_client_tool_round_tool_call_then_tool_result_with_the_session(nexus, fake_openai):
    arguments = {"action": "add_table", "table": "investment.securities"}
    fake_openai.script(
        Reply(
            text="", tool_calls=(FakeToolCall(name="data_modeler_control", arguments=arguments, id="call_1"),)
        ),
        Reply(text="Added the securities table."),
    )
    _, token, _ = await _user_with_agent(nexus, fake_openai, tools=[MODELER])
    socket = await _open(nexus, token)
    try:
        await _initialize(socket, "session-tools")
        await socket.send(
            {"type": "user_message", "data": {"sessionId": "session-tools", "content": "Add securities."}}
        )
        call = await socket.until("tool_call", timeout=20)
        # every field the seed documents for a tool_call
        assert call["data"]["sessionId"] == "session-tools"
        assert call["data"]["toolCallId"]
        assert call["data"]["tool"] == "data_modeler_control"
        assert call["data"]["parameters"] == arguments
        await socket.send(
            {
                "type": "tool_result",
                "data": {
                    "sessionId": "session-tools",
                    "toolCallId": call["data"]["toolCallId"],
                    "result": {"success": True, "data": [{"table": "investment.securities"}]},
                },
            }
        )
        ack = await socket.until("ack", toolCallId=call["data"]["toolCallId"])
        assert ack["data"]["sessionId"] == "session-tools"
        final = await socket.until("agent_message", timeout=20, content="Added the securities table.")
        assert final["data"]["sessionId"] == "session-tools"
        # the model was given the client's result
        second = _chat_requests(fake_openai)[-1]
        tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
        assert json.loads(tool_messages[-1]["content"])["result"] == {
            "success": True,
            "data": [{"table": "investment.securities"}],
        }
    finally:
        await socket.close()
