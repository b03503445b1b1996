"""Live revocation (SPEC section 12): an open socket or SSE stream re-checks its user every
``NEXUS_AUTH_RECHECK_SECONDS`` and ends once the user is deactivated, logged out (cookie
session) or the token expired; SSE streams count toward the per-user connection cap and end at
their maximum age. Everything goes through the real ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import HttpCommunicator, WebsocketCommunicator
from django.test import Client as HttpClient

from tests.realtime.conftest import Client, make_agent, make_conversation, token_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]

ORIGIN = "http://127.0.0.1:8000"


@pytest.fixture(autouse=True)
def _quick_rechecks(settings):
    # The default is 60 s; the behaviour is the same at any interval.
    settings.NEXUS_AUTH_RECHECK_SECONDS = 0.2
    settings.NEXUS_ALLOWED_ORIGINS = [ORIGIN]


@pytest.fixture
def conversation(user):
    return make_conversation(user, make_agent(reply="ok", chunks=1))


def _signed_in_browser(user) -> HttpClient:
    browser = HttpClient()
    browser.force_login(user)
    return browser


async def _cookie_socket(application, browser: HttpClient, path: str) -> Client:
    cookie = f"sessionid={browser.cookies['sessionid'].value}".encode()
    client = Client(
        WebsocketCommunicator(application, path, headers=[(b"cookie", cookie), (b"origin", ORIGIN.encode())])
    )
    connected, _ = await client.connect()
    assert connected
    assert (await client.recv())["type"] == "connection"
    return client


def _deactivate(user) -> None:
    user.is_active = False
    user.save(update_fields=["is_active"])


async def test_a_cookie_socket_closes_after_logout(application, user, conversation):
    browser = await database_sync_to_async(_signed_in_browser)(user)
    socket = await _cookie_socket(application, browser, f"/ws/conversations/{conversation.pk}/")
    response = await database_sync_to_async(browser.post)("/api/auth/logout", content_type="application/json")
    assert response.status_code == 200 and response.json()["session_ended"] is True
    assert await socket.closed(timeout=15) == 4003
    assert socket.frames[-1]["type"] == "error" and socket.frames[-1]["data"]["message"] == "Signed out."


async def test_a_cookie_socket_closes_after_deactivation(application, user, conversation):
    browser = await database_sync_to_async(_signed_in_browser)(user)
    socket = await _cookie_socket(application, browser, f"/ws/conversations/{conversation.pk}/")
    await database_sync_to_async(_deactivate)(user)
    assert await socket.closed(timeout=15) == 4003


async def test_a_cookie_socket_closes_after_a_password_change(application, user, conversation):
    browser = await database_sync_to_async(_signed_in_browser)(user)
    socket = await _cookie_socket(application, browser, f"/ws/conversations/{conversation.pk}/")

    def change_password():
        user.set_password("a-brand-new-password-42")
        user.save()

    await database_sync_to_async(change_password)()
    assert await socket.closed(timeout=15) == 4003


async def test_a_cookie_socket_stays_open_while_the_session_lives(application, user, conversation):
    browser = await database_sync_to_async(_signed_in_browser)(user)
    socket = await _cookie_socket(application, browser, f"/ws/conversations/{conversation.pk}/")
    other = await database_sync_to_async(_signed_in_browser)(user)  # another browser logs out...
    await database_sync_to_async(other.post)("/api/auth/logout", content_type="application/json")
    # ...which ends only that session: after several re-checks this socket still answers
    for _ in range(5):
        await asyncio.sleep(0.2)  # pacing only: the assertion is the pong, not a time
        await socket.send({"type": "ping"})
        assert (await socket.until("pong"))["type"] == "pong"
    await socket.close()


async def test_a_bearer_socket_closes_when_the_user_is_deactivated(connect, user, conversation):
    socket = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert (await socket.recv())["type"] == "connection"
    await database_sync_to_async(_deactivate)(user)
    assert await socket.closed(timeout=15) == 4003


async def test_a_bearer_socket_closes_when_the_password_changes(connect, user, conversation):
    socket = await connect("/ws/events/", user=user)
    assert (await socket.recv())["type"] == "connection"

    def change_password():
        user.set_password("a-brand-new-password-42")
        user.save()

    await database_sync_to_async(change_password)()
    assert await socket.closed(timeout=15) == 4003


async def test_a_socket_closes_4002_when_its_token_expires(connect, user, conversation):
    from rest_framework_simplejwt.tokens import AccessToken

    def short_token() -> str:
        token = AccessToken.for_user(user)
        token.set_exp(lifetime=timedelta(seconds=2))
        return str(token)

    socket = await connect(
        f"/ws/conversations/{conversation.pk}/", token=await database_sync_to_async(short_token)()
    )
    assert (await socket.recv())["type"] == "connection"
    assert await socket.closed(timeout=15) == 4002


# --- SSE streams ---------------------------------------------------------------------------------


class SSE:
    """One HTTP request to the real ASGI application, read as it streams; disconnects on demand."""

    def __init__(self, application: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        self._inbox.put_nowait({"type": "http.request", "body": b"", "more_body": False})
        self.task = asyncio.ensure_future(application(scope, self._inbox.get, self._outbox.put))
        self.status = 0
        self.body = b""
        self.ended = False

    async def start(self, timeout: float = 10) -> int:
        message = await asyncio.wait_for(self._outbox.get(), timeout)
        assert message["type"] == "http.response.start"
        self.status = message["status"]
        return self.status

    async def read_until(self, marker: bytes, timeout: float = 15) -> bytes:
        async with asyncio.timeout(timeout):
            while marker not in self.body and not self.ended:
                message = await self._outbox.get()
                self.body += message.get("body", b"")
                self.ended = not message.get("more_body", False)
        return self.body

    async def read_to_end(self, timeout: float = 15) -> bytes:
        async with asyncio.timeout(timeout):
            while not self.ended:
                message = await self._outbox.get()
                self.body += message.get("body", b"")
                self.ended = not message.get("more_body", False)
        return self.body

    async def disconnect(self) -> None:
        await self._inbox.put({"type": "http.disconnect"})
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 10)


def _last_error(body: bytes) -> dict[str, Any]:
    block = body.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert block.startswith(b"event: error\ndata: "), block
    return json.loads(block[len(b"event: error\ndata: ") :])


@pytest.fixture
async def streams(application):
    opened: list[SSE] = []

    async def open_stream(path: str, *, token: str) -> SSE:
        stream = SSE(application, path, [(b"authorization", f"Bearer {token}".encode())])
        opened.append(stream)
        await stream.start()
        return stream

    yield open_stream
    for stream in opened:
        if not stream.task.done():
            await stream.disconnect()
    # Each request ran its database calls in a thread of its own (Django's ThreadSensitiveContext)
    # and a request the client left is never "finished": its persistent connection is closed
    # when collected, before PostgreSQL is asked to drop the test database.
    gc.collect()


async def test_sse_streams_count_toward_the_connection_cap(streams, connect, user, conversation):
    token = await database_sync_to_async(token_for)(user)
    path = f"/api/conversations/{conversation.pk}/events/"
    five = [await streams(path, token=token) for _ in range(5)]
    for stream in five:
        assert stream.status == 200
        await stream.read_until(b": connected\n\n")
    sixth = await streams(path, token=token)
    assert sixth.status == 429
    body = json.loads(await sixth.read_to_end())
    assert body["code"] == "rate_limited"
    socket = await connect(f"/ws/conversations/{conversation.pk}/", token=token)
    assert await socket.closed() == 4004  # one cap for sockets and streams
    await five[0].disconnect()  # a stream that ends gives its place back
    again = await streams(path, token=token)
    assert again.status == 200


async def test_an_sse_stream_ends_at_its_max_age(streams, user, conversation, settings):
    settings.NEXUS_SSE_MAX_AGE_SECONDS = 1
    settings.NEXUS_WS_MAX_SOCKETS_PER_USER = 1
    token = await database_sync_to_async(token_for)(user)
    path = f"/api/conversations/{conversation.pk}/events/"
    stream = await streams(path, token=token)
    assert stream.status == 200
    body = await stream.read_to_end()
    assert body.startswith(b": connected\n\n")
    error = _last_error(body)
    assert error["type"] == "error" and error["data"]["details"]["close_code"] == 4002
    # its place in the cap (of one here) is free again
    assert (await streams(path, token=token)).status == 200


async def test_an_sse_stream_ends_when_the_user_is_deactivated(streams, user, conversation):
    token = await database_sync_to_async(token_for)(user)
    stream = await streams(f"/api/conversations/{conversation.pk}/events/", token=token)
    await stream.read_until(b": connected\n\n")
    await database_sync_to_async(_deactivate)(user)
    error = _last_error(await stream.read_to_end())
    assert error["data"]["details"]["close_code"] == 4003


async def test_a_run_stream_that_fails_to_start_gives_its_place_back(application, streams, user, settings):
    settings.NEXUS_WS_MAX_SOCKETS_PER_USER = 1

    def paused_agent_conversation():
        agent = make_agent(owner=user, name="Paused")
        agent.status = "paused"
        agent.save(update_fields=["status"])
        return agent, make_conversation(user, agent)

    agent, conversation = await database_sync_to_async(paused_agent_conversation)()
    token = await database_sync_to_async(token_for)(user)
    communicator = HttpCommunicator(
        application,
        "POST",
        f"/api/agents/{agent.pk}/run/",
        body=json.dumps({"query": "hello", "conversation_id": str(conversation.pk)}).encode(),
        headers=[
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
        ],
    )
    response = await communicator.get_response(timeout=10)
    assert response["status"] == 409, response["body"]
    # the place the run's stream took (a cap of one) is free again: an events stream opens
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        stream = await streams(f"/api/conversations/{conversation.pk}/events/", token=token)
        if stream.status == 200 or loop.time() > deadline:
            break
        await stream.read_to_end()
        await asyncio.sleep(0.05)
    assert stream.status == 200
