"""Worker mode: a conversation deleted through one daphne process while a run worker streams its
reply to a socket on the other. The worker is told (its control channel), closes the provider's
stream (the loopback fake OpenAI server sees the client hang up), and ends the run quietly; the
watcher gets ``run_finished`` stopped, ``system`` ``conversation_deleted`` and close 4001."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.fakes import FakeServerProcess, Reply
from tests.realtime_procs.cluster import Socket

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]


async def _provider_hung_up(fake: FakeServerProcess, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        requests = await asyncio.to_thread(lambda: fake.requests)
        if requests and requests[-1].client_closed:
            return True
        if requests and requests[-1].finished_at is not None:
            return False  # it streamed to the end: nobody stopped it
        await asyncio.sleep(0.2)
    return False


async def test_deleting_a_conversation_stops_its_reply_in_the_worker(cluster):
    with FakeServerProcess("openai") as fake:
        fake.script(default=Reply.words(3000, tokens_per_s=50))  # a minute of reply
        user, token = await cluster.user()
        _, conversation = await cluster.openai_conversation(user, fake.base_url)
        sock = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=1), token)
        try:
            await sock.until("session_state")
            await sock.send({"type": "user_message", "data": {"content": "a long story"}})
            await sock.until("streaming_chunk", timeout=30)
            async with httpx.AsyncClient(base_url=cluster.http(0), timeout=30) as http:
                response = await http.delete(
                    f"/api/conversations/{conversation}/", headers={"Authorization": f"Bearer {token}"}
                )
            assert response.status_code == 204
            finished = await sock.until("run_finished", timeout=30)
            assert finished["data"]["status"] == "stopped", finished
            deleted = await sock.until("system", timeout=30)
            assert deleted["data"]["code"] == "conversation_deleted", deleted
            assert await sock.close_code(timeout=30) == 4001
            assert sock.frames[-1]["type"] == "error" and sock.frames[-1]["data"]["code"] == "not_found"
            assert await _provider_hung_up(fake), "the worker kept streaming the deleted conversation's reply"
        finally:
            await sock.close()
    logs = "\n".join(worker.output() for worker in cluster.workers)
    assert "Traceback" not in logs and "could not be stored" not in logs, logs[-3000:]
