"""Seed 003 as its own client uses Nexus: ``/ws/agent?token=`` with ``query`` frames and no
``initialize``, answered by ``data_response`` frames; CORS for a browser app on another origin,
from the seed's ``ALLOWED_ORIGINS`` JSON list (docs/dialects.md, "Seed 003").

End to end: one real daphne (runs inline), the real ``openai`` SDK against a loopback fake OpenAI
server, the real ``query_database`` tool on the demo data set.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from django.core.exceptions import ImproperlyConfigured
from websockets.asyncio.client import connect

from nexus.env import env_origins
from realtime.dialects.seed003 import SEED003
from runs.eventlog.base import LoggedEvent
from tests.fakes import FakeServerProcess, Reply
from tests.fakes.script import FakeToolCall
from tests.realtime_procs.cluster import Cluster, Socket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

APP_ORIGIN = "http://localhost:3000"  # the seed's frontend
OTHER_ORIGIN = "http://evil.example"
# Exactly as the seed's "CORS Configuration" writes it, under the seed's variable name.
SEED_ALLOWED_ORIGINS = '["http://localhost:3000", "https://your-domain.com"]'
QUERY = {
    "type": "query",
    "query": "Buscar pacientes com nome João",
    "context": {"userId": "auth_123", "clinicId": "clinic_456"},
    "timestamp": "2024-01-01T00:00:00Z",
}


@pytest.fixture(scope="module")
def fake():
    with FakeServerProcess("openai") as server:
        yield server


@pytest.fixture(scope="module")
def nexus(tmp_path_factory):
    cluster = Cluster(
        tmp_path_factory.mktemp("seed003"), None, extra_env={"ALLOWED_ORIGINS": SEED_ALLOWED_ORIGINS}
    )
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


async def _agent(nexus: Cluster, user: int, fake: FakeServerProcess, **fields) -> str:
    assert nexus.db is not None
    return await nexus.db.acall(
        "agent", owner_id=user, provider="openai", config={}, base_url=fake.base_url, **fields
    )


async def _seed_socket(nexus: Cluster, token: str) -> Socket:
    """The seed's client: the token in the URL, the path without a trailing slash."""
    return Socket(await connect(nexus.ws(f"/ws/agent?token={token}"), open_timeout=10))


def _assert_recent(timestamp: str) -> None:
    moment = datetime.fromisoformat(timestamp)
    assert moment.tzinfo is not None
    assert abs((datetime.now(UTC) - moment).total_seconds()) < 60, timestamp


def _user_turns(fake: FakeServerProcess, model: str) -> list[list[str]]:
    """The user messages of each request the fake received for ``model``."""
    return [
        [m["content"] for m in r.json["messages"] if m["role"] == "user"]
        for r in fake.requests
        if r.json and r.json.get("model") == model
    ]


async def test_a_query_without_initialize_is_answered_by_the_default_agent_as_data_response(nexus, fake):
    user, token = await nexus.user()
    # The default agent: the first active agent the user may use, by name.
    await _agent(nexus, user, fake, model="model-paused", name="Aaron", status="paused")
    await _agent(nexus, user, fake, model="model-default", name="Beatriz")
    await _agent(nexus, user, fake, model="model-other", name="Carla")
    answer = "Encontrei 2 pacientes: João Silva e João Souza."
    fake.script(Reply(text=answer), Reply(text="Nenhum outro."))
    sock = await _seed_socket(nexus, token)
    try:
        await sock.send(QUERY)
        response = await sock.until("data_response", timeout=30)
        assert response["type"] == "data_response"
        assert response["data_type"] == "text"
        assert response["data"] == answer
        assert response["count"] == 1
        assert isinstance(response["timestamp"], str)
        _assert_recent(response["timestamp"])
        assert response["status"] == "complete"
        # Nothing but the greeting and the answer: no chunks, acks or run bookkeeping.
        assert [f["type"] for f in sock.frames] == ["connection", "data_response"], sock.frames

        # A second query continues the same conversation with the same agent.
        await sock.send({**QUERY, "query": "E outros?"})
        again = await sock.until("data_response", timeout=30)
        assert (again["data_type"], again["data"], again["count"]) == ("text", "Nenhum outro.", 1)
        assert again["message_id"] != response["message_id"]
    finally:
        await sock.close()
    assert _user_turns(fake, "model-default") == [[QUERY["query"]], [QUERY["query"], "E outros?"]]
    assert _user_turns(fake, "model-other") == _user_turns(fake, "model-paused") == []


async def test_the_rows_of_a_data_tool_come_as_their_own_data_response_before_the_text(nexus, fake):
    user, token = await nexus.user()
    await _agent(nexus, user, fake, model="model-data", name="Dados", tools=["query_database"])
    sql = "SELECT name, owner, cash FROM portfolios ORDER BY name"
    fake.script(
        Reply(text="", tool_calls=(FakeToolCall(name="query_database", arguments={"sql": sql}),)),
        Reply(text="Three portfolios: Balanced, Growth and Income."),
    )
    sock = await _seed_socket(nexus, token)
    try:
        await sock.send({**QUERY, "query": "List the portfolios."})
        rows = await sock.until("data_response", timeout=30)
        assert rows["data_type"] == "rows"
        assert rows["data"] == [
            {"name": "Balanced", "owner": "carol", "cash": 230250.0},
            {"name": "Growth", "owner": "alice", "cash": 125000.0},
            {"name": "Income", "owner": "bob", "cash": 80500.0},
        ]
        assert rows["count"] == 3
        _assert_recent(rows["timestamp"])
        assert rows["columns"] == ["name", "owner", "cash"]
        assert rows["truncated"] is False
        assert rows["tool"] == "query_database"
        text = await sock.until("data_response", timeout=30)
        assert text["data_type"] == "text"
        assert text["data"] == "Three portfolios: Balanced, Growth and Income."
        assert text["count"] == 1
        _assert_recent(text["timestamp"])
        assert [f["type"] for f in sock.frames] == ["connection", "data_response", "data_response"]
    finally:
        await sock.close()


async def test_a_query_with_no_agent_to_answer_gets_a_coded_error_and_the_socket_stays(nexus):
    _, token = await nexus.user()  # a fresh database: no shared agents, none of this user's
    sock = await _seed_socket(nexus, token)
    try:
        await sock.send(QUERY)
        error = await sock.until("error")
        assert error["data"]["code"] == "not_found"
        assert "agent" in error["data"]["message"].lower()
        await sock.send({"type": "query", "query": ""})
        assert (await sock.until("error"))["data"]["code"] == "validation_error"
        await sock.send({"type": "ping"})
        await sock.until("pong")
    finally:
        await sock.close()


async def test_initialize_then_query_still_speaks_the_native_protocol(nexus, fake):
    user, token = await nexus.user()
    await _agent(nexus, user, fake, model="model-native", name="Native")
    fake.script(Reply(text="Native reply."))
    sock = await _seed_socket(nexus, token)
    try:
        await sock.send({"type": "initialize"})
        await sock.until("session_state")
        await sock.send(QUERY)
        await sock.until("ack")
        reply = await sock.until("agent_message", timeout=30)
        assert reply["data"]["content"] == "Native reply."
        assert "data_response" not in [f["type"] for f in sock.frames]
    finally:
        await sock.close()


# --- CORS and the WebSocket Origin check: one list ---------------------------------------------


def _preflight(nexus: Cluster, origin: str) -> httpx.Response:
    return httpx.options(
        f"{nexus.http()}/api/agents",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=10,
    )


def test_a_preflight_from_an_allowed_origin_is_answered_with_credentials(nexus):
    for origin in ("http://localhost:3000", "https://your-domain.com"):
        response = _preflight(nexus, origin)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == origin
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed


def test_a_preflight_from_another_origin_gets_no_cors_headers(nexus):
    response = _preflight(nexus, OTHER_ORIGIN)
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers
    assert _preflight(nexus, "http://localhost:3001").headers.get("access-control-allow-origin") is None


async def test_a_request_carries_cors_headers_for_a_listed_origin_only(nexus):
    _, token = await nexus.user()
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=nexus.http(), headers=auth, timeout=10) as client:
        allowed = await client.get("/api/agents/", headers={"Origin": APP_ORIGIN})
        other = await client.get("/api/agents/", headers={"Origin": OTHER_ORIGIN})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == APP_ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in other.headers


async def test_a_websocket_from_a_disallowed_origin_is_refused_even_with_a_good_token(nexus):
    _, token = await nexus.user()
    refused = Socket(
        await connect(nexus.ws(f"/ws/agent?token={token}"), origin=OTHER_ORIGIN, open_timeout=10)
    )
    assert await refused.close_code() == 4003
    assert [f["type"] for f in refused.frames] == ["error"]
    assert refused.frames[0]["data"]["code"] == "forbidden"
    assert "origin" in refused.frames[0]["data"]["message"].lower()
    allowed = Socket(await connect(nexus.ws(f"/ws/agent?token={token}"), origin=APP_ORIGIN, open_timeout=10))
    try:
        assert (await allowed.recv())["type"] == "connection"
    finally:
        await allowed.close()


# --- The setting ------------------------------------------------------------------------------

NAMES = ("NEXUS_ALLOWED_ORIGINS", "ALLOWED_ORIGINS", "NEXUS_WS_ALLOWED_ORIGINS")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, ["http://default.example"]),
        (
            {"NEXUS_ALLOWED_ORIGINS": "https://a.example, http://B.example:3000/"},
            ["https://a.example", "http://b.example:3000"],
        ),
        ({"ALLOWED_ORIGINS": SEED_ALLOWED_ORIGINS}, ["http://localhost:3000", "https://your-domain.com"]),
        ({"NEXUS_WS_ALLOWED_ORIGINS": "https://old.example"}, ["https://old.example"]),
        (
            {"NEXUS_ALLOWED_ORIGINS": "https://a.example", "NEXUS_WS_ALLOWED_ORIGINS": "https://a.example"},
            ["https://a.example"],
        ),
        ({"NEXUS_ALLOWED_ORIGINS": ""}, []),
    ],
)
def test_the_allowed_origins_come_from_one_setting_and_its_aliases(environ, expected):
    assert env_origins(NAMES, ["http://default.example"], environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {"NEXUS_ALLOWED_ORIGINS": "https://a.example", "ALLOWED_ORIGINS": '["https://b.example"]'},
        {"NEXUS_ALLOWED_ORIGINS": "*"},
        {"NEXUS_ALLOWED_ORIGINS": "localhost:3000"},
        {"NEXUS_ALLOWED_ORIGINS": "https://a.example/app"},
        {"ALLOWED_ORIGINS": '["https://a.example",'},
        {"ALLOWED_ORIGINS": '{"origin": "https://a.example"}'},
    ],
)
def test_a_bad_or_conflicting_origin_setting_stops_the_start(environ):
    with pytest.raises(ImproperlyConfigured):
        env_origins(NAMES, [], environ)


def test_json_and_comma_forms_agree():
    comma = env_origins(NAMES, [], {"NEXUS_ALLOWED_ORIGINS": "http://localhost:3000,https://your-domain.com"})
    assert comma == env_origins(NAMES, [], {"ALLOWED_ORIGINS": SEED_ALLOWED_ORIGINS})
    assert json.loads(SEED_ALLOWED_ORIGINS) == comma


async def test_a_failed_reply_comes_as_an_error_frame_then_its_data_response(nexus, fake):
    user, token = await nexus.user()
    await _agent(nexus, user, fake, model="model-failing", name="Failing")
    fake.script(Reply(status=400, error_message="bad request from the provider"))
    sock = await _seed_socket(nexus, token)
    try:
        await sock.send(QUERY)
        error = await sock.until("error", timeout=30)
        assert error["data"]["code"] == "provider_error"
        assert error["data"]["kind"] == "bad_request"
        # The client waiting for its answer still gets one: empty, with the reply's status.
        response = await sock.until("data_response", timeout=30)
        assert (response["data_type"], response["data"], response["count"]) == ("text", "", 1)
        assert response["status"] == "error"
        _assert_recent(response["timestamp"])
    finally:
        await sock.close()


# --- The codec's frame limit ------------------------------------------------------------------


def _logged(kind: str, data: dict, seq: int = 7) -> LoggedEvent:
    payload = orjson.dumps({"type": kind, "timestamp": "2026-01-02T03:04:05.678Z", "data": data})
    return LoggedEvent(seq=seq, payload=payload, kind=kind)


def test_rows_past_the_frame_limit_are_cut_to_the_first_that_fit_and_flagged():
    rows = [[i, "x" * 100] for i in range(200)]
    evt = _logged(
        "tool_result",
        {
            "toolCallId": "c1",
            "tool": "query_database",
            "is_error": False,
            "result": {"columns": ["id", "pad"], "rows": rows, "row_count": 200, "truncated": False},
        },
    )
    (whole,) = SEED003.render(evt, frame_bytes=1_048_576)
    assert json.loads(whole)["count"] == 200 and json.loads(whole)["truncated"] is False
    (frame,) = SEED003.render(evt, frame_bytes=4096)
    assert len(frame.encode()) <= 4096
    cut = json.loads(frame)
    assert 0 < cut["count"] == len(cut["data"]) < 200
    assert cut["data"] == [{"id": i, "pad": "x" * 100} for i in range(cut["count"])]
    assert cut["truncated"] is True
    assert cut["timestamp"] == "2026-01-02T03:04:05.678Z"


def test_a_reply_past_the_frame_limit_is_cut_and_flagged():
    evt = _logged("agent_message", {"messageId": "m1", "content": "é" * 5000, "status": "complete"})
    (frame,) = SEED003.render(evt, frame_bytes=2048)
    assert len(frame.encode()) <= 2048
    cut = json.loads(frame)
    assert cut["data_type"] == "text" and cut["data"] and "é" * len(cut["data"]) == cut["data"]
    assert cut["data_truncated"] is True and cut["count"] == 1


@pytest.mark.parametrize(
    ("kind", "data"),
    [
        ("streaming_chunk", {"messageId": "m1", "chunk": "Hi", "isDone": False}),
        ("run_started", {"run_id": "r1"}),
        ("tool_call", {"toolCallId": "c1", "tool": "query_database", "parameters": {}}),
        ("tool_result", {"tool": "query_database", "is_error": True, "result": {"error": "no"}}),
        ("tool_result", {"tool": "weather", "is_error": False, "result": {"temp": 20}}),
        ("tool_result", {"tool": "t", "is_error": False, "result": {"columns": ["a"], "rows": [[1, 2]]}}),
        ("user_message", {"messageId": "m0", "content": "Hi"}),
    ],
)
def test_events_with_no_seed003_frame_render_nothing(kind, data):
    assert SEED003.render(_logged(kind, data), frame_bytes=1_048_576) == ()


def test_errors_keep_the_native_frame():
    evt = _logged("error", {"code": "provider_error", "message": "down"}, seq=9)
    (frame,) = SEED003.render(evt, frame_bytes=1_048_576)
    assert json.loads(frame) == {"seq": 9, **json.loads(evt.payload)}
