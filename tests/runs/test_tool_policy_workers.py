"""Worker mode: two users' runs on one run worker, their client tool calls with the same provider
call id; each answer, sent to a daphne process, reaches its own run on the worker and no other.

A real cluster (tests/realtime_procs/cluster.py: daphne, a run worker, Redis) and the real OpenAI
SDK in the worker against the loopback fake server."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests.fakes import FakeOpenAI
from tests.fakes.script import FakeToolCall, Reply
from tests.realtime_procs.cluster import Cluster, Socket

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

CLIENT_TOOL = {
    "name": "browser_secret",
    "description": "Something only the user's browser knows.",
    "parameters": {"type": "object", "properties": {}},
    "execution": "client",
}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(default_reply=Reply(text="Thanks.")) as server:
        yield server


@pytest.fixture
def cluster(tmp_path, redis_url, fake_openai) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path,
        redis_url,
        extra_env={
            "OPENAI_BASE_URL": fake_openai.base_url,
            "OPENAI_API_KEY": "sk-test",
            "NEXUS_EGRESS_ALLOW": "127.0.0.1",  # the fake server is on loopback
        },
    )
    try:
        cluster.start(webs=1, workers=1)
        yield cluster
    finally:
        cluster.stop()


async def _conversation(cluster: Cluster, name: str) -> tuple[str, str]:
    """(access token, conversation id) of a fresh user whose agent has one client tool."""
    user_id, token = await cluster.user()
    async with httpx.AsyncClient(
        base_url=cluster.http(), headers={"Authorization": f"Bearer {token}"}
    ) as http:
        response = await http.post(
            "/api/agents/",
            json={"name": name, "provider": "openai", "model": "fake-model", "tools": [CLIENT_TOOL]},
        )
        assert response.status_code == 201, response.text
    conversation = await cluster.db.acall("conversation", owner_id=user_id, agent_ids=[response.json()["id"]])
    return token, conversation


@pytest.mark.xfail(
    strict=False,
    reason="FLAKY, cause not found yet: in about 1 CI run in 4 (2 of 8 full runs on 2026-12-05) B's "
    "answer, sent after A's run ended, produced no tool_result within 15 s. Not reproduced in 26 runs "
    "on 2026-12-05 (alone, beside test_tool_policy.py, SQLite and PostgreSQL, load average 10-14). "
    "Not the answer-before-the-call-is-stored race (fixed, test below): B's call row is written on "
    "the worker's database thread before A's tool_result seq, so before A's run_finished. The failure "
    "message now shows B's frames, B's run row, whether the worker lives, and every process's log.",
)
async def test_two_users_answers_to_the_same_call_id_reach_their_own_runs(cluster, fake_openai):
    call = FakeToolCall(name="browser_secret", arguments={}, id="call_same")
    token_a, conversation_a = await _conversation(cluster, "A")
    token_b, conversation_b = await _conversation(cluster, "B")
    socket_a = await Socket.open(cluster.ws(f"/ws/conversations/{conversation_a}/"), token_a)
    socket_b = await Socket.open(cluster.ws(f"/ws/conversations/{conversation_b}/"), token_b)
    try:
        fake_openai.script(Reply(text="", tool_calls=(call,)))
        await socket_a.send({"type": "user_message", "data": {"content": "I am A."}})
        call_a = await socket_a.until("tool_call", timeout=30)
        fake_openai.script(Reply(text="", tool_calls=(call,)))
        await socket_b.send({"type": "user_message", "data": {"content": "I am B."}})
        call_b = await socket_b.until("tool_call", timeout=30)
        assert call_a["data"]["toolCallId"] == call_b["data"]["toolCallId"] == "call_same"
        # Both wait paused, stored, owned by no process (runs.approvals): the answers wake them.
        for run_id in (call_a["data"]["run_id"], call_b["data"]["run_id"]):
            for _ in range(100):
                run = await cluster.db.acall("run", run_id=run_id)
                if run["status"] == "waiting":
                    break
                await asyncio.sleep(0.1)
            assert (run["status"], run["owner"]) == ("waiting", "")

        await socket_a.send(
            {"type": "tool_result", "data": {"toolCallId": "call_same", "result": "A's secret"}}
        )
        result_a = await socket_a.until("tool_result", timeout=15)
        await socket_a.until("run_finished", timeout=15)
        await socket_b.send(
            {"type": "tool_result", "data": {"toolCallId": "call_same", "result": "B's secret"}}
        )
        try:
            result_b = await socket_b.until("tool_result", timeout=15)
        except TimeoutError:
            # What the next failure needs to name its cause: B's run as stored (still running?
            # its owner?), whether the worker is alive, and every process's log.
            run_b_now = await cluster.db.acall("run", run_id=call_b["data"]["run_id"])
            alive = [w.alive() for w in cluster.workers]
            raise AssertionError(
                f"B's answer reached no run; B's socket read {socket_b.frames[-8:]}; "
                f"B's run {run_b_now}; workers alive {alive}\n{cluster.logs()}"
            ) from None
        await socket_b.until("run_finished", timeout=15)
        assert (result_a["data"]["result"], result_b["data"]["result"]) == ("A's secret", "B's secret")
    finally:
        await socket_a.close()
        await socket_b.close()


@contextlib.contextmanager
def _messages_locked(database_url: str) -> Iterator[None]:
    """No process may write a message while this holds (reads go on): SQLite's write lock (WAL
    readers do not wait for it), or PostgreSQL's EXCLUSIVE lock on the messages table."""
    if database_url.startswith("sqlite:///"):
        conn = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=20, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    import psycopg

    with psycopg.connect(database_url) as conn, conn.transaction():
        conn.execute("LOCK TABLE conversations_message IN EXCLUSIVE MODE")
        yield


async def test_an_answer_sent_the_moment_the_call_is_seen_is_kept_while_the_worker_is_slow_to_write(
    cluster, fake_openai
):
    """A client answers a client tool call as soon as it sees it, and the web process finds the call
    by its stored row. The worker's database writes lag (here: messages are locked while the call
    is announced), so the call must be stored before it is announced: an answer that found no call
    was refused with not_found, and the run waited for the timeout."""
    call = FakeToolCall(name="browser_secret", arguments={}, id="call_quick")
    token, conversation = await _conversation(cluster, "Quick")
    socket = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/"), token)
    answer = {"type": "tool_result", "data": {"toolCallId": "call_quick", "result": "mine"}}
    try:
        fake_openai.script(Reply(text="Let me look that up now.", tool_calls=(call,), tokens_per_s=4))
        await socket.send({"type": "user_message", "data": {"content": "What is my secret?"}})
        await socket.until("streaming_chunk", timeout=30)
        answered = False
        with _messages_locked(cluster.env["DATABASE_URL"]):
            try:
                await socket.until("tool_call", timeout=3)
            except TimeoutError:
                pass  # not announced while its row cannot be written
            else:
                answered_at = len(socket.frames)
                await socket.send(answer)
                answered = True
                with contextlib.suppress(TimeoutError):
                    await socket.until("error", timeout=2)  # what the old code answered
        if not answered:
            await socket.until("tool_call", timeout=15)
            answered_at = len(socket.frames)
            await socket.send(answer)
        try:
            result = await socket.until("tool_result", timeout=15)
        except TimeoutError:
            raise AssertionError(f"the answer was lost: {socket.frames[answered_at:]}") from None
        assert result["data"]["result"] == "mine"
        assert not [f for f in socket.frames[answered_at:] if f["type"] == "error"], socket.frames[
            answered_at:
        ]
        await socket.until("run_finished", timeout=15)
    finally:
        await socket.close()
