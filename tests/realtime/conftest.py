"""Fixtures for in-process realtime tests: the real ASGI application, the scripted provider,
and a client that reads frames by type."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from tests.factories import make_agent, make_conversation, token_for  # noqa: F401 (their old home)
from tests.realtime import scripted


@pytest.fixture
def scripted_provider():
    scripted.register()
    scripted.CLOSED.clear()
    scripted.SEEN.clear()


@pytest.fixture(autouse=True)
async def _engine_cleanup():
    yield
    from runs.eventlog import _logs
    from runs.manager import _managers

    loop = asyncio.get_running_loop()
    manager = _managers.pop(loop, None)
    if manager is not None:
        await manager.close()
    log = _logs.pop(loop, None)
    if log is not None:
        await log.close()
    from django.db import connections

    # Connections opened by the engine's thread would keep the test database busy at teardown.
    with contextlib.suppress(RuntimeError):  # tests without database access have nothing to close
        await database_sync_to_async(connections.close_all)()


@pytest.fixture
def application():
    from nexus.asgi import application

    return application


class Client:
    """A WebsocketCommunicator that reads JSON frames and keeps what it skipped."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator
        self.frames: list[dict[str, Any]] = []

    async def connect(self) -> tuple[bool, Any]:
        return await self.ws.connect(timeout=5)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        frame = json.loads(await self.ws.receive_from(timeout=timeout))
        self.frames.append(frame)
        return frame

    async def until(self, kind: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.recv(timeout=max(0.01, deadline - loop.time()))
            if frame["type"] == kind and all(frame.get("data", {}).get(k) == v for k, v in match.items()):
                return frame

    async def closed(self, timeout: float = 5) -> int:
        """Read until the server closes; the close code."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            output = await self.ws.receive_output(timeout=max(0.01, deadline - loop.time()))
            if output["type"] == "websocket.close":
                return output.get("code", 1000)
            if output.get("text"):
                self.frames.append(json.loads(output["text"]))

    async def close(self) -> None:
        await self.ws.disconnect()


@pytest.fixture
async def connect(application):
    opened: list[Client] = []

    async def _connect(
        path: str, *, user=None, token: str | None = None, headers=None, subprotocols=None
    ) -> Client:
        hdrs = list(headers or [])
        if user is not None and token is None:
            token = await database_sync_to_async(token_for)(user)
        if token is not None:
            hdrs.append((b"authorization", f"Bearer {token}".encode()))
        client = Client(WebsocketCommunicator(application, path, headers=hdrs, subprotocols=subprotocols))
        connected, _ = await client.connect()
        assert connected
        opened.append(client)
        return client

    yield _connect
    for client in opened:
        with contextlib.suppress(Exception):
            await client.close()
