"""A real WebSocket client for the cluster tests: one conversation watched across reconnects.

It records every frame and checks the delivery promise as frames arrive: conversation events come
in ``seq`` order with no gap and no duplicate, except right after an ``info {code: resync}``, when
the next ``session_state`` sets a new starting point. It also assembles each reply from its
chunks, starting from the text a ``session_state`` carried, so a test can compare what a client
saw with what the database stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection


class Watcher:
    """One client of one conversation; ``connect`` again (anywhere) to resume from ``last_seq``."""

    def __init__(self, *, conversation_id: str, token: str, name: str = "") -> None:
        self.conversation_id = conversation_id
        self.token = token
        self.name = name or conversation_id[:8]
        self.frames: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # frames with a seq, in arrival order
        self.violations: list[str] = []  # gaps and duplicates, as text
        self.last_seq: int | None = None
        self.resyncs = 0
        self.connects = 0
        self.close_code: int | None = None
        self.text: dict[str, str] = {}  # message id -> text assembled by this client
        self.final: dict[str, dict[str, Any]] = {}  # message id -> its agent_message data
        self._baseline_pending = False
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # -- connection ------------------------------------------------------------------------------

    async def connect(self, ws_base: str, *, resume: bool = True, timeout: float = 10.0) -> None:
        """Open a socket on ``ws_base`` (``ws://host:port``); with ``resume``, from ``last_seq``."""
        await self.close()
        query = f"?last_seq={self.last_seq}" if resume and self.last_seq is not None else ""
        self._baseline_pending = not query  # a fresh connection starts where its session_state says
        self.close_code = None
        self._ws = await websockets.connect(
            f"{ws_base}/ws/conversations/{self.conversation_id}/{query}",
            additional_headers={"Authorization": f"Bearer {self.token}"},
            open_timeout=timeout,
            ping_interval=None,
            max_size=None,
            close_timeout=1,
        )
        self.connects += 1
        self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    async def send(self, kind: str, **data: Any) -> None:
        assert self._ws is not None
        await self._ws.send(json.dumps({"type": kind, "data": data}))

    def drop(self) -> None:
        """Lose the connection abruptly (no close frame), as a network failure would."""
        if self._ws is not None:
            self._ws.transport.abort()

    async def close(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._record(json.loads(raw))
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code if ws.close_code is not None else 1006
            self._changed.set()

    # -- bookkeeping -----------------------------------------------------------------------------

    def _record(self, frame: dict[str, Any]) -> None:
        frame["_received"] = time.time()
        self.frames.append(frame)
        kind = frame.get("type")
        data = frame.get("data") or {}
        if kind == "info" and data.get("code") == "resync":
            self.resyncs += 1
            self._baseline_pending = True
        elif kind == "session_state" and self._baseline_pending:
            self._baseline_pending = False
            self.last_seq = int(data["last_seq"])
            for message in data.get("messages", []):
                self.text[message["id"]] = message["content"]
        if "seq" in frame:
            seq = int(frame["seq"])
            if self.last_seq is not None and seq <= self.last_seq:
                self.violations.append(f"{self.name}: duplicate seq {seq} after {self.last_seq}")
            elif self.last_seq is not None and seq != self.last_seq + 1:
                self.violations.append(f"{self.name}: gap {self.last_seq} -> {seq}")
            self.last_seq = max(seq, self.last_seq or 0)
            self.events.append(frame)
            if kind == "streaming_chunk":
                mid = data["messageId"]
                self.text[mid] = self.text.get(mid, "") + data["chunk"]
            elif kind == "agent_message":
                self.final[data["messageId"]] = data
        self._changed.set()

    def seen(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """Frames of ``kind`` whose data has every ``match`` item."""
        return [
            f
            for f in self.frames
            if f.get("type") == kind and all((f.get("data") or {}).get(k) == v for k, v in match.items())
        ]

    async def wait_for(
        self,
        predicate: Callable[[Watcher], Any],
        *,
        timeout: float = 10.0,
        what: str = "condition",
        fail_on_close: bool = True,
    ) -> Any:
        """Until ``predicate(self)`` is truthy (returned); TimeoutError naming ``what`` otherwise, or
        ConnectionError if the socket closes first (with ``fail_on_close``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            self._changed.clear()
            result = predicate(self)
            if result:
                return result
            if fail_on_close and self._reader is not None and self._reader.done():
                raise ConnectionError(f"{self.name}: closed ({self.close_code}) before {what}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {what} within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_frame(
        self, kind: str, *, timeout: float = 10.0, after: int = 0, **match: Any
    ) -> dict[str, Any]:
        """The first frame of ``kind`` matching ``match`` among frames[after:]."""

        def found(w: Watcher) -> dict[str, Any] | None:
            for frame in w.frames[after:]:
                data = frame.get("data") or {}
                if frame.get("type") == kind and all(data.get(k) == v for k, v in match.items()):
                    return frame
            return None

        return await self.wait_for(found, timeout=timeout, what=f"{kind} {match or ''}".strip())


def run_finished(watcher: Watcher, run_id: str | None = None) -> dict[str, Any] | None:
    """The ``run_finished`` data for ``run_id`` (or any run) this client saw, if any."""
    for frame in watcher.frames:
        if frame.get("type") == "run_finished" and (run_id is None or frame["data"].get("run_id") == run_id):
            return frame["data"]
    return None
