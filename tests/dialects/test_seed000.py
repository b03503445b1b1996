"""Seed 000's client, to the letter, against real daphne in single-user mode (SPEC section 9).

The seed's client has no login: ``curl /api/agents``, ``POST /api/agents`` with its body,
``POST /api/invoke`` with ``{agentId, message, conversationId?}``, and ``new WebSocket('ws://host')``
at the server root that only listens. The server runs with ``NEXUS_AUTH=off`` (and DEBUG off with
``NEXUS_AUTH_OFF_CONFIRM=yes``), the replies come from a loopback fake OpenAI server. The guards of
single-user mode are tested in-process at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from websockets.asyncio.client import ClientConnection, connect

from tests.factories import make_agent, make_conversation
from tests.fakes import FakeServerProcess, Reply
from tests.procs import PYTHON, ROOT, Process, base_env, free_port, manage, wait_for_http
from tests.realtime.conftest import _engine_cleanup  # noqa: F401 - stops the run engine an in-process socket starts
from tests.realtime.test_revocation import SSE, _signed_in_browser

REPLY = "Forty two is the answer the seed expects."
SEED_AGENT = {
    "name": "My Agent",
    "description": "Custom agent description",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "emoji": "🤖",
    "workspace": "default",
}
AGENT_FIELDS = {
    "id",
    "name",
    "identityName",
    "emoji",
    "identityEmoji",
    "description",
    "workspace",
    "provider",
    "model",
    "status",
    "config",
}
LISTEN_SECONDS = 80  # the seed's socket only listens, for longer than Nexus's ping + pong timeout
PING_SECONDS = 5  # Nexus's application ping interval and pong timeout, and daphne's protocol ping
DAPHNE_PINGS = ["--ping-interval", str(PING_SECONDS), "--ping-timeout", str(2 * PING_SECONDS)]


@dataclass
class Nexus:
    base: str
    ws: str
    log: Path


@pytest.fixture(scope="module")
def nexus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seed000")
    with FakeServerProcess("openai") as fake:
        fake.script(default=Reply(text=REPLY))
        env = base_env(
            NEXUS_VAR_DIR=str(tmp),
            DATABASE_URL=f"sqlite:///{tmp / 'nexus.sqlite3'}",
            NEXUS_RUN_MODE="inline",
            NEXUS_AUTH="off",
            DJANGO_DEBUG="false",
            NEXUS_AUTH_OFF_CONFIRM="yes",
            OPENAI_API_KEY="test",
            OPENAI_BASE_URL=fake.base_url,
            GEMINI_BASE_URL=f"http://127.0.0.1:{free_port()}",
            OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}",
            NEXUS_PROVIDER_STATUS_TIMEOUT="1",
            # A listen-only client never answers an application ping: with these, the old rule
            # would have closed it after 10 s.
            NEXUS_WS_PING_INTERVAL=str(PING_SECONDS),
            NEXUS_WS_PONG_TIMEOUT=str(PING_SECONDS),
            NEXUS_LOG_LEVEL="warning",
        )
        migrated = manage("migrate", "--noinput", env=env)
        assert migrated.returncode == 0, migrated.stderr
        port = free_port()
        proc = Process(
            [PYTHON, "-m", "nexus.serve", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_PINGS],
            env=env,
            log_path=tmp / "daphne.log",
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/health", process=proc)
            yield Nexus(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", tmp / "daphne.log")
        finally:
            proc.stop()


def _assert_seed_agent(item: dict[str, Any], *, name: str) -> None:
    assert set(item) >= AGENT_FIELDS, item
    uuid.UUID(item["id"])
    assert item["name"] == item["identityName"] == name
    assert item["emoji"] == item["identityEmoji"] == SEED_AGENT["emoji"]
    assert item["description"] == SEED_AGENT["description"]
    assert item["workspace"] == SEED_AGENT["workspace"]
    assert item["provider"] == SEED_AGENT["provider"]
    assert item["model"] == SEED_AGENT["model"]
    assert item["status"] == "active"
    assert json.loads(item["config"]) == {}


async def _frame(ws: ClientConnection, timeout: float) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(raw, str)
    frame: dict[str, Any] = json.loads(raw)
    return frame


async def _listen(ws: ClientConnection, seconds: float) -> list[dict[str, Any]]:
    """Every frame that comes in ``seconds``; a close meanwhile fails (ConnectionClosed)."""
    frames: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frames.append(await _frame(ws, left))
        except TimeoutError:
            break
    return frames


async def _invoke_and_watch(
    http: httpx.AsyncClient, ws: ClientConnection, body: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """POST /api/invoke while the root socket reads, until the reply's ``agent-response-complete``."""
    frames: list[dict[str, Any]] = []

    async def watch() -> None:
        while True:
            frame = await _frame(ws, 30)
            frames.append(frame)
            if frame.get("kind") == "agent-response-complete":
                return

    response, _ = await asyncio.gather(http.post("/api/invoke", json=body), watch())
    assert response.status_code == 200, response.text
    return response.json(), frames


def _assert_neural(frames: list[dict[str, Any]], *, agent: dict[str, Any], invoked: dict[str, Any]) -> None:
    for frame in frames:
        assert frame["type"] == "neural-event", frame
        assert frame["data"]["conversationId"] == invoked["conversationId"], frame
    chunks = [f for f in frames if f["kind"] == "agent-response"]
    assert chunks, [f["kind"] for f in frames]
    for frame in chunks:
        assert set(frame["data"]) >= {"agentId", "agentName", "chunk", "conversationId"}
        assert frame["data"]["agentId"] == agent["id"]
        assert frame["data"]["agentName"] == agent["name"]
        assert isinstance(frame["data"]["chunk"], str)
    assert "".join(f["data"]["chunk"] for f in chunks) == REPLY
    complete = frames[-1]
    assert complete["kind"] == "agent-response-complete"
    assert set(complete["data"]) >= {"agentId", "agentName", "response", "conversationId", "messageId"}
    assert complete["data"]["agentId"] == agent["id"]
    assert complete["data"]["agentName"] == agent["name"]
    assert complete["data"]["response"] == REPLY
    assert complete["data"]["messageId"] == invoked["messageId"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_seeds_rest_calls_work_without_a_login(nexus):
    with httpx.Client(base_url=nexus.base, timeout=30) as http:
        health = http.get("/health").json()
        assert health["auth"] == {"mode": "off", "single_user": "local"}

        created = http.post("/api/agents", json=SEED_AGENT)
        assert created.status_code == 201, created.text
        _assert_seed_agent(created.json(), name="My Agent")

        listed = http.get("/api/agents")
        assert listed.status_code == 200
        assert isinstance(listed.json(), list)  # a bare array, no pagination envelope
        mine = [item for item in listed.json() if item["id"] == created.json()["id"]]
        assert len(mine) == 1
        _assert_seed_agent(mine[0], name="My Agent")
        # Nexus's own list (with the slash) is unchanged: the paginated envelope.
        native = http.get("/api/agents/").json()
        assert set(native) == {"count", "next", "previous", "results"}

        # a paused agent is not "active": the seed's list leaves it out
        paused = http.post("/api/agents", json={**SEED_AGENT, "name": "Paused"}).json()
        assert http.patch(f"/api/agents/{paused['id']}/", json={"status": "paused"}).status_code == 200
        assert paused["id"] not in {item["id"] for item in http.get("/api/agents").json()}

        invoked = http.post(
            "/api/invoke", json={"agentId": created.json()["id"], "message": "Meaning of life?"}
        )
        assert invoked.status_code == 200, invoked.text
        body = invoked.json()
        assert body["success"] is True
        assert body["response"] == REPLY
        uuid.UUID(body["conversationId"])
        uuid.UUID(body["messageId"])

        again = http.post(
            "/api/invoke",
            json={
                "agentId": created.json()["id"],
                "message": "And again?",
                "conversationId": body["conversationId"],
            },
        ).json()
        assert again["success"] is True and again["conversationId"] == body["conversationId"]
        assert again["messageId"] != body["messageId"]

        # bad input: a clear 400 in the API's error shape, never a crash
        missing = http.post("/api/invoke", json={"message": "no agent"})
        assert missing.status_code == 400 and missing.json()["code"] == "validation_error", missing.text
        bad_agent = http.post("/api/agents", json={"name": "No model"})
        assert bad_agent.status_code == 400 and "model" in json.dumps(bad_agent.json())
        # a bad token is refused even with authentication off: credentials sent are credentials checked
        refused = http.get("/api/agents", headers={"Authorization": "Bearer not-a-token"})
        assert refused.status_code == 401
        # a page on another origin may not act as the local user
        foreign = http.post(
            "/api/invoke",
            json={"agentId": created.json()["id"], "message": "hi"},
            headers={"Origin": "http://evil.example"},
        )
        assert foreign.status_code == 401
    assert "AUTHENTICATION IS OFF" in nexus.log.read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_the_root_socket_keeps_a_listen_only_client_and_sends_neural_events(nexus):
    async with httpx.AsyncClient(base_url=nexus.base, timeout=60) as http:
        agent = (await http.post("/api/agents", json={**SEED_AGENT, "name": "Listener's agent"})).json()
        # As a browser's WebSocket: no credentials, no frames sent, no pings of its own (browsers
        # send none; they answer the server's protocol pings, as this client does on its own).
        async with connect(nexus.ws + "/", ping_interval=None, open_timeout=10) as ws:
            opened = time.monotonic()
            hello = await _frame(ws, 10)
            assert set(hello) == {"type", "status", "timestamp"}
            assert hello["type"] == "connection" and hello["status"] == "connected"
            datetime.fromisoformat(hello["timestamp"].replace("Z", "+00:00"))

            # silence for longer than the application's ping + pong timeout: no frame, no close
            with pytest.raises(TimeoutError):
                await _frame(ws, 4 * PING_SECONDS)

            # a run started meanwhile (by the seed's REST call) reaches the socket
            invoked, frames = await _invoke_and_watch(http, ws, {"agentId": agent["id"], "message": "Hello?"})
            assert invoked["success"] is True and invoked["response"] == REPLY
            _assert_neural(frames, agent=agent, invoked=invoked)

            # listen on, past LISTEN_SECONDS in all, then a second run: the socket still delivers
            trailing = await _listen(ws, LISTEN_SECONDS - (time.monotonic() - opened))
            assert [f["kind"] for f in trailing] == ["agent-run-finished"], trailing
            assert trailing[0]["data"]["conversationId"] == invoked["conversationId"]
            assert trailing[0]["data"]["status"] == "completed"
            assert time.monotonic() - opened >= 75
            later, frames = await _invoke_and_watch(
                http,
                ws,
                {
                    "agentId": agent["id"],
                    "message": "Still there?",
                    "conversationId": invoked["conversationId"],
                },
            )
            assert later["conversationId"] == invoked["conversationId"]
            _assert_neural(frames, agent=agent, invoked=later)


# --- the guards of single-user mode (in-process) ----------------------------------------------------


def _load_settings(monkeypatch, tmp_path, **env: str) -> dict[str, Any]:
    """Run nexus/settings.py as a starting process would, with only ``env`` set of Nexus's own."""
    for name in list(os.environ):
        if name.startswith(("NEXUS_", "DJANGO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NEXUS_VAR_DIR", str(tmp_path))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "nexus" / "settings.py"))


def test_auth_off_is_refused_at_start_without_debug_or_confirmation(monkeypatch, tmp_path):
    with pytest.raises(ImproperlyConfigured, match="NEXUS_AUTH_OFF_CONFIRM=yes"):
        _load_settings(monkeypatch, tmp_path, NEXUS_AUTH="off")
    with pytest.raises(ImproperlyConfigured, match="NEXUS_AUTH_OFF_CONFIRM=yes"):
        _load_settings(monkeypatch, tmp_path, NEXUS_AUTH="off", NEXUS_AUTH_OFF_CONFIRM="true")


def test_auth_off_starts_with_debug_or_with_confirmation(monkeypatch, tmp_path):
    debug = _load_settings(monkeypatch, tmp_path, NEXUS_AUTH="off", DJANGO_DEBUG="true")
    assert debug["NEXUS_AUTH_OFF"] is True and debug["NEXUS_SINGLE_USER"] == "local"
    confirmed = _load_settings(
        monkeypatch, tmp_path, NEXUS_AUTH="off", NEXUS_AUTH_OFF_CONFIRM="yes", NEXUS_SINGLE_USER="me"
    )
    assert confirmed["NEXUS_AUTH_OFF"] is True and confirmed["NEXUS_SINGLE_USER"] == "me"


def test_auth_is_on_by_default_and_a_bad_value_is_refused(monkeypatch, tmp_path):
    assert _load_settings(monkeypatch, tmp_path)["NEXUS_AUTH_OFF"] is False
    with pytest.raises(ImproperlyConfigured, match="NEXUS_AUTH"):
        _load_settings(monkeypatch, tmp_path, NEXUS_AUTH="disabled")


@pytest.mark.django_db
def test_single_user_mode_never_opens_the_admin(client, settings):
    settings.NEXUS_AUTH_OFF = True
    assert client.get("/api/agents").status_code == 200  # the mode is on for the API...
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")  # ...not here
    assert client.get("/admin/auth/user/").status_code == 302


@pytest.mark.django_db
def test_single_user_mode_acts_as_one_user_made_on_first_use(client, settings):
    settings.NEXUS_AUTH_OFF = True
    settings.NEXUS_SINGLE_USER = "laptop"
    assert not get_user_model().objects.filter(username="laptop").exists()
    created = client.post("/api/agents", SEED_AGENT, content_type="application/json")
    assert created.status_code == 201, created.content
    assert client.get("/api/agents").json()[0]["id"] == created.json()["id"]
    user = get_user_model().objects.get(username="laptop")
    assert not user.has_usable_password() and not user.is_staff
    assert user.agents.count() == 1


@pytest.mark.django_db
def test_single_user_mode_opens_the_chat_page_without_a_login_but_never_the_admin(client, settings):
    settings.NEXUS_AUTH_OFF = False
    assert client.get("/").status_code == 302  # the mode off: the sign-in page first
    settings.NEXUS_AUTH_OFF = True
    settings.NEXUS_SINGLE_USER = "laptop"
    page = client.get("/")
    assert page.status_code == 200 and b"composer-input" in page.content
    assert client.get("/api/conversations/").status_code == 200  # the page's session
    admin = client.get("/admin/")
    assert admin.status_code == 302 and admin["Location"].startswith("/admin/login/")
    other_site = client.__class__().get("/", HTTP_ORIGIN="https://evil.example")
    assert other_site.status_code == 302  # a page elsewhere does not get the local user


@pytest.mark.django_db
def test_without_single_user_mode_the_seed_paths_need_credentials(client, settings):
    settings.NEXUS_AUTH_OFF = False
    assert client.get("/api/agents").status_code == 401
    assert (
        client.post(
            "/api/invoke", {"agentId": str(uuid.uuid4())}, content_type="application/json"
        ).status_code
        == 401
    )


@pytest.mark.django_db
def test_health_shows_the_mode(client, settings):
    settings.NEXUS_AUTH_OFF = False
    assert client.get("/health").json()["auth"] == {"mode": "on"}
    settings.NEXUS_AUTH_OFF = True
    settings.NEXUS_SINGLE_USER = "local"
    assert client.get("/health").json()["auth"] == {"mode": "off", "single_user": "local"}


# --- the root socket's authentication, in-process through the real ASGI application ----------------


async def _root_socket(
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[WebsocketCommunicator, dict]:
    from nexus.asgi import application

    ws = WebsocketCommunicator(application, "/", headers=headers or [])
    connected, _ = await ws.connect(timeout=5)
    assert connected
    return ws, json.loads(await ws.receive_from(timeout=5))


async def _closed_with(ws: WebsocketCommunicator) -> int:
    output = await ws.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    return int(output["code"])


@pytest.mark.django_db(transaction=True)
async def test_the_root_socket_greets_the_single_user_as_the_seed_shows(settings):
    settings.NEXUS_AUTH_OFF = True
    ws, hello = await _root_socket()
    try:
        assert set(hello) == {"type", "status", "timestamp"}
        assert (hello["type"], hello["status"]) == ("connection", "connected")
    finally:
        await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("auth_off", "headers"),
    [
        (False, []),  # the mode is off: no credentials, no socket
        (True, [(b"authorization", b"Bearer not-a-token")]),  # a bad token is never the single user
        (True, [(b"origin", b"http://evil.example")]),  # another site's page is not the local user
    ],
    ids=["auth-on", "bad-token", "foreign-origin"],
)
async def test_the_root_socket_refuses_what_single_user_mode_does_not_cover(settings, auth_off, headers):
    settings.NEXUS_AUTH_OFF = auth_off
    ws, frame = await _root_socket(headers)
    assert frame["type"] == "error" and frame["data"]["code"] == "forbidden", frame
    assert await _closed_with(ws) == 4003


@pytest.mark.django_db(transaction=True)
async def test_a_single_user_sse_stream_outlives_a_stale_session_cookie(settings):
    """The single user's stream is re-checked as that user, not as the (signed-out) cookie's session."""
    from django.contrib.sessions.backends.db import SessionStore

    from core.auth import single_user_get
    from nexus.asgi import application

    settings.NEXUS_AUTH_OFF = True
    settings.NEXUS_AUTH_RECHECK_SECONDS = 0.2
    user = await database_sync_to_async(single_user_get)()
    conversation = await database_sync_to_async(
        lambda: make_conversation(user, make_agent(owner=user, reply="ok", chunks=1))
    )()

    def stale_session() -> str:
        store = SessionStore()
        store["theme"] = "dark"  # a session, but nobody signed in through it
        store.create()
        return str(store.session_key)

    key = await database_sync_to_async(stale_session)()
    cookie = f"{settings.SESSION_COOKIE_NAME}={key}".encode()
    stream = SSE(application, f"/api/conversations/{conversation.pk}/events/", [(b"cookie", cookie)])
    try:
        assert await stream.start() == 200
        await stream.read_until(b": connected\n\n")
        with pytest.raises(TimeoutError):  # several re-checks go by, and nothing ends the stream
            await stream.read_until(b"event: error", timeout=1.5)
        assert not stream.ended, stream.body
    finally:
        await stream.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_signed_in_sse_stream_still_ends_at_logout_in_single_user_mode(settings, user):
    """A session is still a session: the mode never turns a signed-out stream into the single user's."""
    from nexus.asgi import application

    settings.NEXUS_AUTH_OFF = True
    settings.NEXUS_AUTH_RECHECK_SECONDS = 0.2
    conversation = await database_sync_to_async(
        lambda: make_conversation(user, make_agent(owner=user, reply="ok", chunks=1))
    )()
    browser = await database_sync_to_async(_signed_in_browser)(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}".encode()
    stream = SSE(application, f"/api/conversations/{conversation.pk}/events/", [(b"cookie", cookie)])
    try:
        assert await stream.start() == 200
        await stream.read_until(b": connected\n\n")
        logout = await database_sync_to_async(browser.post)(
            "/api/auth/logout", content_type="application/json"
        )
        assert logout.status_code == 200
        body = await stream.read_to_end()
        assert b"Signed out." in body and b'"close_code":4003' in body.replace(b" ", b""), body
    finally:
        if not stream.ended:
            await stream.disconnect()
