"""One run on a worker, watched from two daphne processes: the same events, stop from anywhere,
and invoke over real HTTP (issue 8, Done means)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.realtime_procs.cluster import Socket, reply_text

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

LONG_REPLY = " ".join(f"word{i}" for i in range(300))


def _worker_pids(cluster) -> set[int]:
    return {w.pid for w in cluster.workers}


def _owner_pid(owner: str) -> int:
    return int(owner.partition("|")[0].rsplit(":", 1)[1])


async def _open_pair(cluster, token: str, conversation: str) -> tuple[Socket, Socket]:
    path = f"/ws/conversations/{conversation}/"
    a = await Socket.open(cluster.ws(path, web=0), token)
    b = await Socket.open(cluster.ws(path, web=1), token)
    for sock in (a, b):
        await sock.until("session_state")
    return a, b


async def test_two_sockets_on_two_processes_get_identical_event_sequences(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user, reply=LONG_REPLY, chunks=120, delay=0.005)
    a, b = await _open_pair(cluster, token, conversation)
    try:
        await a.send({"type": "user_message", "data": {"content": "Go.", "client_message_id": "m1"}})
        ack = await a.until("ack")
        run_id = ack["data"]["run_id"]
        for sock in (a, b):
            await sock.until("run_finished", timeout=30, run_id=run_id)
        events_a, events_b = a.events(), b.events()
        assert events_a == events_b  # the same frames, byte for byte once parsed, in the same order
        seqs = [e["seq"] for e in events_a]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        kinds = [e["type"] for e in events_a]
        assert kinds[:2] == ["user_message", "run_started"]
        assert kinds[-2:] == ["agent_message", "run_finished"]
        message_id = events_a[1]["data"]["message_id"]
        stored = await cluster.db.acall("message", message_id=message_id)
        assert reply_text(events_a, message_id) == LONG_REPLY == stored["content"]
        assert events_a[-2]["data"]["content"] == LONG_REPLY
        assert events_a[-1]["data"]["status"] == "completed"
        run = await cluster.db.acall("run", run_id=run_id)
        assert _owner_pid(run["owner"]) in _worker_pids(cluster)  # it ran on a worker, not on daphne
    finally:
        await a.close()
        await b.close()


async def test_stop_sent_through_the_other_process_cuts_the_run_short(cluster):
    # The reply would stream for 300 x 50 ms = 15 s: a stop that works ends it long before half of
    # it (checked on the text, not on a measured time, which a loaded machine stretches).
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user, reply=LONG_REPLY, chunks=300, delay=0.05)
    a, b = await _open_pair(cluster, token, conversation)
    try:
        await a.send({"type": "user_message", "data": {"content": "Talk for a while."}})
        run_id = (await a.until("ack"))["data"]["run_id"]
        await b.until("streaming_chunk", timeout=15)
        await asyncio.sleep(0.3)
        await b.send({"type": "stop", "data": {"run_id": run_id}})
        finished = await b.until("run_finished", timeout=10, run_id=run_id)
        assert finished["data"]["status"] == "stopped"
        final = next(e for e in b.events() if e["type"] == "agent_message")
        message_id = final["data"]["messageId"]
        text = reply_text(b.events(), message_id)
        assert 0 < len(text) < len(LONG_REPLY) // 2 and LONG_REPLY.startswith(text)
        stored = await cluster.db.acall("message", message_id=message_id)
        assert stored["status"] == "stopped" and stored["content"] == text == final["data"]["content"]
        # the worker gets the stop through its control channel; nothing arrives after run_finished
        await a.until("run_finished", timeout=5, run_id=run_id)
        assert a.events() == b.events()
    finally:
        await a.close()
        await b.close()


async def test_invoke_returns_the_whole_reply_while_a_socket_on_another_process_streams_it(cluster):
    user, token = await cluster.user()
    agent, conversation = await cluster.scripted_conversation(user, reply=LONG_REPLY, chunks=60, delay=0.01)
    watcher = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token)
    try:
        await watcher.until("session_state")
        async with httpx.AsyncClient(base_url=cluster.http(1), timeout=30) as http:
            response = await http.post(
                "/api/invoke/",
                json={"agent_id": agent, "message": "Answer me.", "conversation_id": conversation},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True and body["status"] == "completed"
        assert body["response"] == LONG_REPLY
        finished = await watcher.until("run_finished", timeout=10, run_id=body["run_id"])
        assert finished["data"]["status"] == "completed"
        assert reply_text(watcher.events(), body["message_id"]) == LONG_REPLY
        stored = await cluster.db.acall("message", message_id=body["message_id"])
        assert stored["content"] == LONG_REPLY
    finally:
        await watcher.close()
