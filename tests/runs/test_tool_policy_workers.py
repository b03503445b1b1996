"""Worker mode: two users' runs on one run worker, their client tool calls with the same provider
call id; each answer, sent to a daphne process, reaches its own run on the worker and no other.

A real cluster (tests/realtime_procs/cluster.py: daphne, a run worker, Redis) and the real OpenAI
SDK in the worker against the loopback fake server."""

from __future__ import annotations

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
    reason="FLAKY, under investigation: in about 1 CI run in 4 (2 of 8 on 2026-12-05, quiet machine "
    "included) B's answer, sent after A's run ended, produced no tool_result within 15 s; never "
    "reproduced alone (0 of 8). The failure message now lists what B's socket read; the in-process "
    "twin (tests/runs/test_tool_policy.py) holds the no-crossing rule without flaking.",
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
        run_a = await cluster.db.acall("run", run_id=call_a["data"]["run_id"])
        run_b = await cluster.db.acall("run", run_id=call_b["data"]["run_id"])
        assert run_a["owner"] == run_b["owner"]  # both wait on the one worker

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
            raise AssertionError(
                f"B's answer reached no run; B's socket read {socket_b.frames[-8:]}"
            ) from None
        await socket_b.until("run_finished", timeout=15)
        assert (result_a["data"]["result"], result_b["data"]["result"]) == ("A's secret", "B's secret")
    finally:
        await socket_a.close()
        await socket_b.close()
