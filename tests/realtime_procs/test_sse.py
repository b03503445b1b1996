"""The SSE endpoints over real HTTP against daphne: resume by ``Last-Event-ID``, ``\\n\\n``
framing, keep-alive comments, and the run endpoint that ends with its run (SPEC section 3)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.realtime_procs.cluster import Socket, reply_text

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

REPLY = "Server-sent events carry the same frames as the socket."


class SSEReader:
    """Reads an SSE body as it arrives and checks its framing: every block ends with a blank
    line and is either a comment or ``id: <seq>`` + ``data: <json>``."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.chunks = response.aiter_raw()
        self.buffer = b""
        self.events: list[dict] = []
        self.comments: list[str] = []

    async def next_block(self, timeout: float) -> bytes:
        while b"\n\n" not in self.buffer:
            self.buffer += await asyncio.wait_for(anext(self.chunks), timeout)
        block, _, self.buffer = self.buffer.partition(b"\n\n")
        return block

    async def read(self, timeout: float = 10.0) -> dict | str:
        block = (await self.next_block(timeout)).decode()
        if block.startswith(":"):
            assert "\n" not in block, block
            self.comments.append(block[1:].strip())
            return self.comments[-1]
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("id: ") and lines[1].startswith("data: "), block
        frame = json.loads(lines[1][len("data: ") :])
        assert int(lines[0][len("id: ") :]) == frame["seq"]
        self.events.append(frame)
        return frame

    async def until_event(self, predicate, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            item = await self.read(max(0.01, deadline - time.monotonic()))
            if isinstance(item, dict) and predicate(item):
                return item


async def _reply_through_socket(cluster, token: str, conversation: str, content: str) -> list[dict]:
    sock = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token)
    try:
        await sock.until("session_state")
        await sock.send({"type": "user_message", "data": {"content": content}})
        run_id = (await sock.until("ack"))["data"]["run_id"]
        await sock.until("run_finished", timeout=20, run_id=run_id)
        return sock.events()
    finally:
        await sock.close()


async def test_last_event_id_resumes_with_exactly_the_missing_events_then_live_then_keep_alive(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user, reply=REPLY, chunks=8)
    seen = await _reply_through_socket(cluster, token, conversation, "First.")
    resume_after = seen[len(seen) // 2]["seq"]
    missing = [e for e in seen if e["seq"] > resume_after]
    headers = {"Authorization": f"Bearer {token}", "Last-Event-ID": str(resume_after)}
    async with (
        httpx.AsyncClient(base_url=cluster.http(1), timeout=httpx.Timeout(10, read=30)) as http,
        http.stream("GET", f"/api/conversations/{conversation}/events/", headers=headers) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = SSEReader(response)
        assert await reader.read() == "connected"
        for _ in missing:
            await reader.read()
        assert reader.events == missing  # the same frames the socket got, nothing before, no repeat
        # live: a new reply follows with the next seqs, no gap, no duplicate
        more = await _reply_through_socket(cluster, token, conversation, "Second.")
        last = more[-1]
        await reader.until_event(lambda e: e["seq"] == last["seq"])
        assert reader.events == missing + more
        # and, when nothing happens, a keep-alive comment (every 15 s)
        quiet_since = time.monotonic()
        assert await reader.read(timeout=20) == "keep-alive"
        assert time.monotonic() - quiet_since >= 10


async def test_the_run_endpoint_streams_one_run_and_ends_with_it(cluster):
    user, token = await cluster.user()
    agent, conversation = await cluster.scripted_conversation(user, reply=REPLY, chunks=8, delay=0.01)
    watcher = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token)
    try:
        await watcher.until("session_state")
        async with (
            httpx.AsyncClient(base_url=cluster.http(1), timeout=httpx.Timeout(10, read=30)) as http,
            http.stream(
                "POST",
                f"/api/agents/{agent}/run/",
                json={"query": "Tell me.", "conversation_id": conversation},
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            assert response.status_code == 200
            assert response.headers["x-conversation-id"] == conversation
            reader = SSEReader(response)
            with pytest.raises(StopAsyncIteration):
                while True:
                    await reader.read(timeout=20)
        kinds = [e["type"] for e in reader.events]
        assert kinds[0] == "user_message" and kinds[-1] == "run_finished"
        assert reader.events[-1]["data"]["status"] == "completed"
        message_id = reader.events[-1]["data"]["message_id"]
        assert reply_text(reader.events, message_id) == REPLY
        await watcher.until("run_finished", timeout=10)
        assert watcher.events() == reader.events  # the socket on the other process saw the same
        stored = await cluster.db.acall("message", message_id=message_id)
        assert stored["content"] == REPLY
    finally:
        await watcher.close()
