"""Long replies and the frame limit (docs/protocol.md, "Frame size"), in process through the real
ASGI application: a reply is capped at NEXUS_MAX_REPLY_CHARS, and no frame a socket sends is
larger than NEXUS_WS_MAX_MESSAGE_BYTES, while what a client assembles stays exactly the stored
reply. (tests/cluster/test_oversized_reply.py does it through real daphne.)"""

from __future__ import annotations

import json

import orjson
import pytest
from channels.db import database_sync_to_async

from tests.realtime import scripted
from tests.realtime.conftest import make_agent, make_conversation

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]

LIMIT = 4096  # NEXUS_WS_MAX_MESSAGE_BYTES for these tests (its minimum is 1024)


def _message(pk):
    from conversations.models import Message

    return Message.objects.get(pk=pk)


async def _frames_until_finished(client) -> list[tuple[int, dict]]:
    """(size in bytes, frame) of every frame up to ``run_finished``."""
    frames = []
    while True:
        raw = await client.ws.receive_from(timeout=10)
        frame = json.loads(raw)
        frames.append((len(raw.encode()), frame))
        if frame["type"] == "run_finished":
            return frames


async def test_a_reply_past_the_cap_ends_incomplete_with_finish_reason_length(connect, user, settings):
    settings.NEXUS_MAX_REPLY_CHARS = 1000
    agent = await database_sync_to_async(make_agent)(reply="abcdefghij", repeat=300, chunks=30)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "say it all"}})
    started = await client.until("run_started")
    frames = [f for _, f in await _frames_until_finished(client)]
    text = "".join(f["data"]["chunk"] for f in frames if f["type"] == "streaming_chunk")
    [info] = [f for f in frames if f["type"] == "info"]
    [final] = [f for f in frames if f["type"] == "agent_message"]
    assert info["data"]["code"] == "reply_too_long" and info["data"]["limit"] == 1000
    assert text == ("abcdefghij" * 300)[:1000] == final["data"]["content"]
    assert final["data"]["status"] == "incomplete"
    assert final["data"]["metadata"]["finish_reason"] == "length"
    assert frames[-1]["data"]["status"] == "incomplete"
    assert scripted.CLOSED, "the provider's stream was not closed at the cap"
    stored = await database_sync_to_async(_message)(started["data"]["message_id"])
    assert (stored.content, stored.status) == (text, "incomplete")
    assert stored.metadata["finish_reason"] == "length"


async def test_no_frame_is_over_the_limit_and_the_chunks_are_the_stored_reply(connect, user, settings):
    settings.NEXUS_WS_MAX_MESSAGE_BYTES = LIMIT
    piece = "line\x01 é 🙂 \n"  # control, accented and astral characters: JSON's widest
    agent = await database_sync_to_async(make_agent)(reply=piece, repeat=1500, chunks=3)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "say it all"}})
    started = await client.until("run_started")
    frames = await _frames_until_finished(client)
    assert max(size for size, _ in frames) <= LIMIT, sorted(size for size, _ in frames)[-3:]
    text = "".join(f["data"]["chunk"] for _, f in frames if f["type"] == "streaming_chunk")
    [final] = [f for _, f in frames if f["type"] == "agent_message"]
    stored = await database_sync_to_async(_message)(started["data"]["message_id"])
    assert text == piece * 1500 == stored.content and stored.status == "complete"
    assert frames[-1][1]["data"]["status"] == "completed"
    # the final message carries what fits, flagged; the stored reply is whole
    assert final["data"]["content_truncated"] is True
    assert stored.content.startswith(final["data"]["content"])
    assert final["data"]["status"] == "complete" and final["data"]["messageId"] == str(stored.pk)

    # A client that comes later: its session_state and its replay from 0 fit too, and the socket
    # keeps working (a ping is answered).
    late = await connect(f"/ws/conversations/{conversation.pk}/?last_seq=0", user=user)
    await late.recv()  # connection
    raw_state = await late.ws.receive_from(timeout=5)
    state = json.loads(raw_state)
    assert state["type"] == "session_state" and len(raw_state.encode()) <= LIMIT
    [reply] = [m for m in state["data"]["messages"] if m["id"] == str(stored.pk)]
    assert reply["content_truncated"] is True and stored.content.startswith(reply["content"])
    replay = await _frames_until_finished(late)
    assert max(size for size, _ in replay) <= LIMIT
    assert "".join(f["data"]["chunk"] for _, f in replay if f["type"] == "streaming_chunk") == stored.content
    await late.send({"type": "ping"})
    assert (await late.until("pong"))["type"] == "pong"


async def test_an_event_logged_over_the_limit_is_cut_to_fit_when_delivered(connect, user, settings):
    """An event already in the log that is larger than a frame may be (logged before this rule, or
    with a larger limit) is cut on its way out, not sent whole: a resume never meets a frame the
    server cannot send."""
    from realtime.protocol import encode_event, event
    from runs.domain_events import ToolResultGiven
    from runs.eventlog import get_event_log

    settings.NEXUS_WS_MAX_MESSAGE_BYTES = LIMIT
    agent = await database_sync_to_async(make_agent)(reply="short")
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    big = event(
        ToolResultGiven(
            tool_call_id="t1",
            tool="lookup",
            result={"rows": ["x" * 100] * 100},
            is_error=False,
            agent_id="a1",
            run_id="r1",
        )
    )
    await get_event_log().append(str(conversation.pk), [encode_event(big)], floor=0, owner_id=user.pk)
    client = await connect(f"/ws/conversations/{conversation.pk}/?last_seq=0", user=user)
    while True:
        raw = await client.ws.receive_from(timeout=5)
        if json.loads(raw).get("seq") is not None:
            break
    frame = orjson.loads(raw)
    assert len(raw.encode()) <= LIMIT
    assert frame["type"] == "tool_result" and frame["data"]["result_truncated"] is True
    assert frame["data"]["toolCallId"] == "t1" and frame["data"]["result"] is None


async def test_invoke_answers_the_whole_reply_and_sse_frames_fit_too(user, settings):
    """The HTTP paths render the same events: ``POST /api/invoke/`` answers with the stored reply
    whole (its final event carries only what fits), and every SSE ``data:`` line of a run fits."""
    from tests.runs.test_quotas import post

    settings.NEXUS_WS_MAX_MESSAGE_BYTES = LIMIT
    piece = "line\x01 é 🙂 \n"
    agent = await database_sync_to_async(make_agent)(owner=user, reply=piece, repeat=1500, chunks=3)
    invoked = await post(user, "/api/invoke/", {"agent_id": str(agent.pk), "message": "say it all"})
    assert invoked.status_code == 200, invoked.content[:300]
    body = invoked.json()
    stored = await database_sync_to_async(_message)(body["message_id"])
    assert body["response"] == piece * 1500 == stored.content and body["success"] is True

    streamed = await post(user, f"/api/agents/{agent.pk}/run/", {"query": "again"})
    assert streamed.status_code == 200
    lines = [line for line in streamed.content.split(b"\n") if line.startswith(b"data: ")]
    assert max(len(line) - len(b"data: ") for line in lines) <= LIMIT
    frames = [orjson.loads(line[len(b"data: ") :]) for line in lines]
    text = "".join(f["data"]["chunk"] for f in frames if f["type"] == "streaming_chunk")
    assert text == piece * 1500
    [final] = [f for f in frames if f["type"] == "agent_message"]
    assert final["data"]["content_truncated"] is True


async def test_the_writer_merges_chunks_only_up_to_a_frame_and_splits_a_longer_one():
    """Chunks queued while an append is in flight (here: while the writer is held) are merged only
    up to ``chunk_chars``; a delta longer than that becomes several chunks. Nothing is lost."""
    from realtime.protocol import chunk_chars
    from runs.eventlog.memory_log import MemoryEventLog
    from runs.events import EventWriter

    log = MemoryEventLog(maxlen=1000, ttl=3600)
    writer = EventWriter(log, "c1", owner_id=None, floor=0, frame_bytes=LIMIT)
    writer.hold()
    deltas = ["ab\x01" * 50] * 40 + ["z" * 5000] + ["é" * 7]
    for delta in deltas:
        writer.emit_chunk(message_id="m1", agent_id="a1", chunk=delta)
    writer.release()
    await writer.flush()
    events = (await log.read_after("c1", 0)).events
    chunks = [orjson.loads(e.payload)["data"]["chunk"] for e in events]
    assert "".join(chunks) == "".join(deltas)
    assert max(len(c) for c in chunks) == chunk_chars(LIMIT)
    assert all(len(e.payload) + 32 <= LIMIT for e in events)
    assert len(chunks) == -(-len("".join(deltas)) // chunk_chars(LIMIT))  # merged as far as allowed


async def test_the_monitor_sends_neural_events_that_fit(connect, user, settings):
    settings.NEXUS_WS_MAX_MESSAGE_BYTES = LIMIT
    piece = "line\x01 é 🙂 \n"
    agent = await database_sync_to_async(make_agent)(reply=piece, repeat=1500, chunks=3)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    monitor = await connect("/ws/events/", user=user)
    await monitor.until("connection")
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "say it all"}})
    sizes, text = [], ""
    while True:
        raw = await monitor.ws.receive_from(timeout=10)
        frame = json.loads(raw)
        sizes.append(len(raw.encode()))
        if frame.get("kind") == "agent-response":
            text += frame["data"]["chunk"]
        if frame.get("kind") == "agent-response-complete":
            assert frame["data"]["response_truncated"] is True
            break
    assert max(sizes) <= LIMIT and text == piece * 1500
