"""Exactly-once delivery across real failures: a socket dropped without a close frame, a client
that stops reading, a worker killed mid-reply (issue 8, Done means)."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.realtime_procs.cluster import Socket, reply_text

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

LONG_REPLY = " ".join(f"token{i}" for i in range(400))


def _contiguous(events: list[dict]) -> bool:
    seqs = [e["seq"] for e in events]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_a_dropped_socket_resumes_on_another_process_with_every_event_exactly_once(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user, reply=LONG_REPLY, chunks=200, delay=0.01)
    path = f"/ws/conversations/{conversation}/"
    first = await Socket.open(cluster.ws(path, web=0), token)
    await first.until("session_state")
    await first.send({"type": "user_message", "data": {"content": "Stream, please."}})
    run_id = (await first.until("ack"))["data"]["run_id"]
    message_id = (await first.until("run_started"))["data"]["message_id"]
    for _ in range(20):
        await first.until("streaming_chunk")
    last_seq = first.events()[-1]["seq"]
    first.ws.transport.abort()  # the TCP connection dies: no close frame, frames in flight are lost
    second = await Socket.open(cluster.ws(f"{path}?last_seq={last_seq}", web=1), token)
    try:
        await second.until("run_finished", timeout=30, run_id=run_id)
        events = first.events() + second.events()
        assert _contiguous(events), "a gap or a duplicate across the reconnect"
        assert second.events()[0]["seq"] == last_seq + 1
        assert not any(f["type"] == "info" and f["data"].get("code") == "resync" for f in second.frames)
        stored = await cluster.db.acall("message", message_id=message_id)
        assembled = reply_text(events, message_id)
        assert assembled.encode() == stored["content"].encode() == LONG_REPLY.encode()
    finally:
        await second.close()


async def test_a_client_that_stops_reading_still_gets_hundreds_of_events_complete(cluster):
    user, token = await cluster.user()
    piece = "x" * 2000
    reply = "".join(f"{i:05d}{piece}" for i in range(300))
    _, conversation = await cluster.scripted_conversation(user, reply=reply, chunks=300, delay=0.004)
    # max_queue=1: the client stops reading the TCP connection, so the backlog builds up upstream
    slow = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token, max_queue=1)
    try:
        await slow.until("session_state")
        await slow.send({"type": "user_message", "data": {"content": "A lot, please."}})
        run_id = (await slow.until("ack"))["data"]["run_id"]
        deadline = time.monotonic() + 30
        while (await cluster.db.acall("run", run_id=run_id))["status"] != "completed":
            assert time.monotonic() < deadline, "the run did not finish"
            await asyncio.sleep(0.2)
        await slow.until("run_finished", timeout=30, run_id=run_id)
        events = slow.events()
        chunks = [e for e in events if e["type"] == "streaming_chunk"]
        assert len(chunks) > 100, "every event was waiting for this client when it started reading"
        assert _contiguous(events)
        message_id = next(e for e in events if e["type"] == "run_started")["data"]["message_id"]
        stored = await cluster.db.acall("message", message_id=message_id)
        assert reply_text(events, message_id) == stored["content"] == reply
    finally:
        await slow.close()


async def test_a_worker_killed_mid_reply_ends_the_run_incomplete_within_15_seconds(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user, reply=LONG_REPLY, chunks=400, delay=0.1)
    watcher = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=1), token)
    try:
        await watcher.until("session_state")
        await watcher.send({"type": "user_message", "data": {"content": "Keep going."}})
        run_id = (await watcher.until("ack"))["data"]["run_id"]
        for _ in range(5):
            await watcher.until("streaming_chunk", timeout=15)
        owner = (await cluster.db.acall("run", run_id=run_id))["owner"]
        owner_pid = int(owner.partition("|")[0].rsplit(":", 1)[1])
        worker = next(w for w in cluster.workers if w.pid == owner_pid)
        worker.kill(signal.SIGKILL)
        killed = time.monotonic()
        cluster.start_worker()  # the next run needs a worker; this one must not adopt the dead run
        finished = await watcher.until("run_finished", timeout=25, run_id=run_id)
        elapsed = time.monotonic() - killed
        assert finished["data"]["status"] == "incomplete"
        assert elapsed <= 15.0, f"incomplete after {elapsed:.1f}s"
        final = next(e for e in watcher.events() if e["type"] == "agent_message")
        assert final["data"]["status"] == "incomplete"
        stored = await cluster.db.acall("message", message_id=final["data"]["messageId"])
        assert stored["status"] == "incomplete" and stored["content"] == final["data"]["content"]
        assert LONG_REPLY.startswith(stored["content"])
        assert _contiguous(watcher.events())
        # the conversation is not stuck: the next message gets a reply from the new worker
        await watcher.send({"type": "user_message", "data": {"content": "Again."}})
        next_run = (await watcher.until("ack"))["data"]["run_id"]
        assert next_run != run_id
        await watcher.until("run_started", timeout=30, run_id=next_run)
        await watcher.until("streaming_chunk", timeout=15)
        await watcher.send({"type": "stop", "data": {"run_id": next_run}})
        finished = await watcher.until("run_finished", timeout=5, run_id=next_run)
        assert finished["data"]["status"] == "stopped"
    finally:
        await watcher.close()
