"""Seed 001's client, unchanged, against real daphne, a run worker, Redis and a loopback fake
OpenAI-compatible service reached through a provider preset (``groq``): its paths (no ``/api``,
no trailing slash), its form login, its bodies and its frames, every documented field asserted."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import httpx
import pytest

from realtime.dialects.seed001_http import DEFAULT_OPENING
from tests.fakes.process import FakeServerProcess
from tests.fakes.script import Reply
from tests.realtime_procs.cluster import Cluster, Socket

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(180)]

REPLY = "Hello! How can I help you today?"
MODEL = "llama-3-70b"


@pytest.fixture(scope="module")
def fake():
    with FakeServerProcess("openai") as server:
        server.script(default=Reply(text=REPLY))
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server_url, fake):
    presets = {"groq": {"base_url": fake.base_url, "api_key_env": "GROQ_API_KEY", "model": MODEL}}
    env = {"NEXUS_PROVIDER_PRESETS": json.dumps(presets), "GROQ_API_KEY": "gsk-test-key"}
    cluster = Cluster(tmp_path_factory.mktemp("seed001"), redis_server_url, extra_env=env)
    try:
        cluster.start(webs=1, workers=1)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def scripted(fake):
    fake.reset()
    fake.script(default=Reply(text=REPLY))
    yield fake
    fake.reset()
    fake.script(default=Reply(text=REPLY))


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def _user(cluster: Cluster) -> tuple[str, str]:
    """A fresh user logged in through the seed's form login: (username, access token)."""
    username = f"s{uuid.uuid4().hex[:10]}"
    await cluster.db.acall("user", username=username)
    async with httpx.AsyncClient(base_url=cluster.http()) as http:
        answer = await http.post(
            "/auth/login", data={"username": username, "password": f"{username}-password-123"}
        )
    assert answer.status_code == 200, answer.text
    return username, answer.json()["access_token"]


def _client(cluster: Cluster, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=cluster.http(), headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


async def _create(http: httpx.AsyncClient, body: dict) -> dict:
    answer = await http.post("/chat/sessions/create", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _until(socket: Socket, kind: str, timeout: float = 15.0, **meta) -> dict:
    while True:
        frame = await socket.recv(timeout)
        if frame["type"] == kind and all(frame.get("metadata", {}).get(k) == v for k, v in meta.items()):
            return frame


HUMAN_SESSION = {
    "session_type": "human_agent",
    "agents": {
        "primary": {
            "provider": "groq",
            "model": MODEL,
            "capabilities": ["conversation"],
            "personality": "helpful and professional",
            "metadata": {"team": "blue"},
            "interaction_modes": ["chat"],
        }
    },
    "interaction_modes": ["chat", "voice"],
    "metadata": {"project": "apollo"},
}


async def test_login_create_session_and_a_text_frame_gets_the_response_frame(cluster, scripted):
    username, token = await _user(cluster)
    async with _client(cluster, token) as http:
        verified = (await http.post("/auth/verify")).json()
        assert verified["valid"] is True and verified["user"] == username and verified["type"] == "access"
        assert verified["exp"] > verified["iat"] and _iso(verified["timestamp"])

        session = await _create(http, HUMAN_SESSION)
        assert session["type"] == "system"
        assert session["status"] == "active" and session["session_type"] == "human_agent"
        assert _iso(session["created_at"])
        assert session["interaction_modes"] == ["chat", "voice"]
        assert session["metadata"] == {"project": "apollo"}
        primary = session["agents"]["primary"]
        assert primary["provider"] == "groq" and primary["model"] == MODEL
        assert primary["capabilities"] == ["conversation"] and primary["interaction_modes"] == ["chat"]
        assert primary["personality"] == "helpful and professional"
        assert primary["status"] == "active" and primary["metadata"] == {"team": "blue"}
        assert (await http.get(f"/chat/sessions/{session['session_id']}")).json() == session

    socket = await Socket.open(cluster.ws(f"/ws/{session['session_id']}"), token)
    try:
        connected = await _until(socket, "system", code="connected")
        assert _iso(connected["timestamp"])
        await socket.send({"type": "text", "content": "Hello AI!", "timestamp": "2024-02-23T12:00:00Z"})
        response = await _until(socket, "response")
        assert response["content"] == REPLY
        assert response["sender"] == primary["agent_id"]
        assert response["receiver"] == username
        assert _iso(response["timestamp"])
        assert response["metadata"]["role"] == "assistant"
        assert response["metadata"]["provider"] == "groq"
        assert response["metadata"]["model"] == MODEL
        # the preset's URL and key carried the call; the person's words reached the model
        asked = [r for r in scripted.requests if r.path == "/v1/chat/completions"][-1]
        assert asked.headers.get("authorization") == "Bearer gsk-test-key"
        assert json.loads(asked.body)["model"] == MODEL
        assert json.loads(asked.body)["messages"][-1]["content"] == "Hello AI!"
        # no native frame leaks into the seed's socket
        assert all("data" not in f and f["type"] in {"system", "info", "response"} for f in socket.frames)
    finally:
        await socket.close()


async def test_an_agent_agent_session_exchanges_turns_on_its_own(cluster, scripted):
    _, token = await _user(cluster)
    body = {
        "session_type": "agent_agent",
        "agents": {
            "primary": {"provider": "groq", "model": MODEL},
            "secondary": {"provider": "groq"},  # the preset's default model
        },
        "settings": {"max_turns": 3, "cooldown_seconds": 0.2},
    }
    async with _client(cluster, token) as http:
        session = await _create(http, body)
    first, second = session["agents"]["primary"]["agent_id"], session["agents"]["secondary"]["agent_id"]
    assert session["agents"]["secondary"]["model"] == MODEL
    socket = await Socket.open(cluster.ws(f"/ws/{session['session_id']}?last_seq=0"), token)
    try:
        ended = await _until(socket, "system", timeout=30, code="session_completed")
        assert ended["content"]
        responses = [f for f in socket.frames if f["type"] == "response"]
        assert [(r["sender"], r["receiver"]) for r in responses] == [
            (first, second),
            (second, first),
            (first, second),
        ]
        cooldowns = [f for f in socket.frames if f["type"] == "cooldown"]
        assert [c["sender"] for c in cooldowns] == [second, first]  # before each next turn
        for cooldown in cooldowns:
            assert cooldown["metadata"]["agent_id"] == cooldown["sender"] and cooldown["content"]
            assert _iso(cooldown["metadata"]["cooldown_until"]) > _iso(cooldown["timestamp"])
        limit = next(f for f in socket.frames if f["type"] == "info")
        assert limit["metadata"]["code"] == "turn_limit_reached"
        # nobody wrote an opening: the default one started the exchange
        opening = json.loads(scripted.requests[0].body)["messages"]
        assert any(DEFAULT_OPENING in m["content"] for m in opening if m["role"] == "user")
    finally:
        await socket.close()


async def test_a_bad_token_is_refused_with_4003_and_the_seed_error_frame(cluster):
    _, token = await _user(cluster)
    async with _client(cluster, token) as http:
        session = await _create(http, HUMAN_SESSION)
    socket = await Socket.open(cluster.ws(f"/ws/{session['session_id']}"), "not-a-jwt")
    error = await socket.recv()
    assert error["type"] == "error" and error["content"] and error["metadata"]["code"] == "forbidden"
    assert await socket.close_code() == 4003
    # an unknown session (or another person's): 4001, the seed's "Invalid session"
    unknown = await Socket.open(cluster.ws(f"/ws/{uuid.uuid4()}"), token)
    error = await _until(unknown, "error")
    assert error["metadata"]["code"] == "not_found" and error["content"]
    assert await unknown.close_code() == 4001
    async with httpx.AsyncClient(base_url=cluster.http()) as http:
        refused = await http.post("/auth/verify", headers={"Authorization": "Bearer not-a-jwt"})
    assert refused.status_code == 401 and refused.json()["detail"]


async def test_the_seeds_own_rate_limits_hold_on_its_paths(cluster):
    _, token = await _user(cluster)
    async with _client(cluster, token) as http:
        for _ in range(5):
            await _create(http, HUMAN_SESSION)
        sixth = await http.post("/chat/sessions/create", json=HUMAN_SESSION)
        assert sixth.status_code == 429
        assert sixth.json()["code"] == "rate_limited" and int(sixth.headers["Retry-After"]) >= 1
        # the native API's own budget is not the seed's
        assert (await http.get("/api/conversations/")).json()["count"] == 5


async def test_a_failed_reply_is_the_seeds_error_frame(cluster, scripted):
    _, token = await _user(cluster)
    async with _client(cluster, token) as http:
        session = await _create(http, HUMAN_SESSION)
    scripted.script(Reply(status=400, error_message="model not found"))
    socket = await Socket.open(cluster.ws(f"/ws/{session['session_id']}"), token)
    try:
        await socket.send({"type": "text", "content": "Hello?", "timestamp": "2024-02-23T12:00:00Z"})
        error = await _until(socket, "error")
        assert (
            error["content"] and error["metadata"]["code"] and isinstance(error["metadata"]["details"], dict)
        )
        assert _iso(error["timestamp"]) and error["metadata"]["seq"] > 0
        # a frame the server cannot take is an error frame too, and the socket stays open
        await socket.send("not json")
        bad = await _until(socket, "error", code="invalid_json")
        assert bad["content"] and "seq" not in bad["metadata"]
        await socket.send({"type": "ping"})
        assert (await _until(socket, "ping"))["content"] == "pong"
    finally:
        await socket.close()


async def test_validation_errors_answer_422_in_the_seed_error_shape(cluster):
    _, token = await _user(cluster)
    async with _client(cluster, token) as http:
        for body in (
            {"session_type": "robot_party", "agents": {"primary": {"provider": "groq"}}},
            {"session_type": "human_agent", "agents": {}},
            {"session_type": "human_agent", "agents": {"primary": {"model": "m"}}},
            {"session_type": "human_agent", "agents": {"primary": {"provider": "openai"}}},
        ):
            answer = await http.post("/chat/sessions/create", json=body)
            assert answer.status_code == 422, (body, answer.text)
            error = answer.json()
            assert error["detail"] and error["code"] == "validation_error" and _iso(error["timestamp"])
        login = await http.post("/auth/login", data={"username": "someone"})
        assert login.status_code == 422 and login.json()["code"] == "validation_error"
        anonymous = await http.get("/agents/list", headers={"Authorization": ""})
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"
        missing = await http.get("/chat/sessions/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"


async def test_agents_list_status_message_and_session_delete(cluster, scripted):
    username, token = await _user(cluster)
    async with _client(cluster, token) as http:
        session = await _create(http, HUMAN_SESSION)
        agent_id = session["agents"]["primary"]["agent_id"]
        socket = await Socket.open(cluster.ws(f"/ws/{session['session_id']}"), token)
        await _until(socket, "system", code="session_state")
        sent = await http.post(
            f"/agents/{agent_id}/message",
            json={"receiver_id": session["session_id"], "content": "Hi there", "message_type": "text"},
        )
        assert sent.status_code == 200, sent.text
        message = sent.json()
        assert message["status"] == "queued" and message["message_id"]
        assert (
            message["sender"] == username and message["receiver"] == agent_id and _iso(message["timestamp"])
        )
        bad_type = await http.post(
            f"/agents/{agent_id}/message",
            json={"receiver_id": session["session_id"], "content": "x", "message_type": "shout"},
        )
        assert bad_type.status_code == 422

        # the agent's answer comes on the session's socket (polling would spend the 20/min budget)
        response = await _until(socket, "response")
        assert response["sender"] == agent_id and response["receiver"] == username
        await socket.close()
        for _ in range(10):  # the run finishes just after its reply is announced
            status = (await http.get(f"/agents/status/{agent_id}")).json()
            if not status["is_running"]:
                break
            await asyncio.sleep(0.2)
        assert status["agent_id"] == agent_id and status["agent_type"] == "openai"
        assert status["status"] == "active" and status["name"]
        assert _iso(status["last_active"]) and status["capabilities"] == ["conversation"]
        assert status["interaction_modes"] == ["chat"] and status["owner_id"]
        assert status["is_running"] is False and status["message_count"] == 1
        assert status["metadata"]["provider"] == "groq" and status["metadata"]["model"] == MODEL
        assert status["metadata"]["cooldown_until"] is None
        assert status["metadata"]["active_conversations"] == 1

        listed = (await http.get("/agents/list")).json()
        assert listed["total_count"] == len(listed["agents"]) >= 1 and listed["user_owned_count"] == 1
        assert _iso(listed["timestamp"])
        assert any(a["agent_id"] == agent_id for a in listed["agents"])

        deleted = await http.delete(f"/chat/sessions/{session['session_id']}")
        assert deleted.status_code == 204
        assert (await http.get(f"/chat/sessions/{session['session_id']}")).status_code == 404


async def test_resume_and_stop_from_a_seed_socket(cluster, scripted):
    _, token = await _user(cluster)
    async with _client(cluster, token) as http:
        session = await _create(http, HUMAN_SESSION)
    path = f"/ws/{session['session_id']}"
    socket = await Socket.open(cluster.ws(path), token)
    try:
        await socket.send({"type": "text", "content": "First", "timestamp": "2024-02-23T12:00:00Z"})
        response = await _until(socket, "response")
        seq = response["metadata"]["seq"]

        # resume: a new socket asking from before the reply gets it again, with the same seq
        again = await Socket.open(cluster.ws(f"{path}?last_seq={seq - 1}"), token)
        try:
            replayed = await _until(again, "response")
            assert replayed["metadata"]["seq"] == seq and replayed["content"] == response["content"]
        finally:
            await again.close()
        # and so does a socket opened at the present that sends the resume frame
        third = await Socket.open(cluster.ws(path), token)
        try:
            state = await _until(third, "system", code="session_state")
            assert state["metadata"]["last_seq"] >= seq
            await third.send({"type": "resume", "last_seq": seq - 1})
            assert (await _until(third, "response"))["metadata"]["seq"] == seq
        finally:
            await third.close()

        # stop: a long slow reply, stopped from the seed socket
        scripted.script(Reply(text=" ".join(f"w{i}" for i in range(2000)), tokens_per_s=50))
        await socket.send({"type": "text", "content": "Talk for a long time."})
        for _ in range(100):
            if len([r for r in scripted.requests if r.path == "/v1/chat/completions"]) >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        await socket.send({"type": "stop", "timestamp": "2024-02-23T12:00:05Z"})
        stopped = await _until(socket, "info", code="stopped")
        assert stopped["metadata"]["status"] == "stopped"
        for _ in range(50):
            cut = [
                f for f in socket.frames if f["type"] == "response" and f["metadata"]["status"] == "stopped"
            ]
            if cut:
                break
            await socket.recv()
        assert cut and 0 < len(cut[0]["content"].split()) < 2000
    finally:
        await socket.close()
