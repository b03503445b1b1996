"""A small HTTP/1.1 server on asyncio that the fake provider servers build on.

It speaks just enough HTTP for the real SDKs (keep-alive, Content-Length and chunked bodies, chunked
streaming replies), records every request, notices when the client closes the connection, and can
misbehave on purpose (see ``script.Reply``). It runs on its own event loop in a background thread,
so sync tests, async tests and benchmarks can all use it, or as a subprocess (``main``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.script import Reply

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
REASONS |= {408: "Request Timeout", 429: "Too Many Requests", 500: "Internal Server Error"}
REASONS |= {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


@dataclass(slots=True, kw_only=True)
class RecordedRequest:
    """One request as the server saw it, and what became of its response."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    connection: int
    received_at: float  # time.monotonic()
    reply: Reply | None = None
    frames_sent: int = 0
    finished_at: float | None = None  # the server completed the response
    client_closed_at: float | None = None  # the client hung up while the response was under way
    last_frame_at: float | None = None

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def client_closed(self) -> bool:
        return self.client_closed_at is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "json": self.json if self.body[:1] in (b"{", b"[") else None,
            "frames_sent": self.frames_sent,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
            "client_closed_at": self.client_closed_at,
            "last_frame_at": self.last_frame_at,
        }


@dataclass(slots=True, kw_only=True)
class Plan:
    """How to answer one request: a plain body, or a stream of frames shaped by ``reply``."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    frames: Iterable[bytes] | None = None  # made lazily, so time to first token is not rendering time
    reply: Reply | None = None
    malformed: bytes = b"{not json\n\n"
    error_frame: bytes = b""


def json_plan(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Plan:
    return Plan(
        status=status,
        headers={"content-type": "application/json", **(headers or {})},
        body=json.dumps(data).encode(),
    )


class _Connection:
    """Reads requests from one socket; ``pending`` keeps bytes read ahead by the close watcher."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        self.reader = reader
        self.writer = writer
        self.number = number
        self.pending = b""
        self.closed = asyncio.Event()

    async def _read(self, n: int) -> bytes:
        if self.pending:
            data, self.pending = self.pending[:n], self.pending[n:]
            return data
        return await self.reader.read(n)

    async def readline(self) -> bytes:
        line = b""
        while not line.endswith(b"\n"):
            if self.pending:
                idx = self.pending.find(b"\n")
                if idx >= 0:
                    line += self.pending[: idx + 1]
                    self.pending = self.pending[idx + 1 :]
                    break
                line += self.pending
                self.pending = b""
                continue
            chunk = await self.reader.readline()
            if not chunk:
                return line
            line += chunk
        return line

    async def readexactly(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = await self._read(n - len(out))
            if not chunk:
                raise asyncio.IncompleteReadError(out, n)
            out += chunk
        return out

    async def watch_close(self) -> None:
        """Wait for the client to close the connection (EOF or reset) while we stream."""
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.pending += data  # a client that sent more than we expected: keep it
        except (ConnectionError, OSError):
            pass
        self.closed.set()


class FakeServer:
    """Base class: subclasses set ``dialect`` and implement ``route``.

    Use as a context manager (``with FakeOpenAI() as server:``) or ``start()``/``stop()``.
    ``script(*replies)`` queues replies for the next streaming requests; when the queue is empty
    ``default_reply`` is used. ``requests`` lists what arrived.
    """

    dialect: ClassVar[str] = "base"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, default_reply: Reply | None = None) -> None:
        self.host = host
        self.port = port
        self.default_reply = default_reply or Reply()
        self.models: list[str] = []
        self._replies: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._connections = 0

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        """Start on a background thread; returns once the port is bound."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._bind())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._shutdown())
            self._loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-{self.dialect}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _bind(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def serve_forever(self) -> None:
        """Serve on the current loop (subprocess mode)."""
        await self._bind()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    # ---- scripting and inspection (thread-safe) --------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to give the SDK / adapter as its base URL."""
        return self.url

    def script(self, *replies: Reply) -> None:
        """Queue ``replies`` for the next streaming requests, replacing anything queued."""
        with self._lock:
            self._replies = deque(replies)

    def next_reply(self) -> Reply:
        with self._lock:
            return self._replies.popleft() if self._replies else self.default_reply

    @property
    def requests(self) -> list[RecordedRequest]:
        """Requests received so far, control requests excluded."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._replies.clear()

    def wait_for(self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 5.0) -> bool:
        """Block until ``predicate(requests)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(list(self._requests)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.05))
            return True

    async def wait_for_async(
        self, predicate: Callable[[list[RecordedRequest]], bool], timeout: float = 5.0
    ) -> bool:
        """``wait_for`` that keeps the caller's event loop running."""
        deadline = time.monotonic() + timeout
        while not predicate(self.requests):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    # ---- dialect hooks ---------------------------------------------------------------------

    def route(self, request: RecordedRequest) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def error_plan(self, reply: Reply) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def _control(self, request: RecordedRequest) -> Plan:
        if request.path == "/_fake/replies" and request.method == "POST":
            data = request.json or {}
            replies = data.get("replies", data if isinstance(data, list) else [])
            self.script(*(Reply.from_dict(r) for r in replies))
            if isinstance(data, dict) and data.get("default") is not None:
                self.default_reply = Reply.from_dict(data["default"])
            return json_plan({"ok": True})
        if request.path == "/_fake/requests":
            return json_plan([r.to_dict() for r in self.requests])
        if request.path == "/_fake/reset" and request.method == "POST":
            self.reset()
            return json_plan({"ok": True})
        return json_plan({"error": "unknown control path"}, status=404)

    # ---- HTTP ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        conn = _Connection(reader, writer, self._connections)
        try:
            while True:
                request = await self._read_request(conn)
                if request is None:
                    break
                if request.path.startswith("/_fake/"):
                    plan = self._control(request)
                else:
                    with self._lock:
                        self._requests.append(request)
                    self._notify()
                    plan = self.route(request)
                keep_open = await self._respond(conn, request, plan)
                if not keep_open:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, OSError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping; asyncio's stream callback must not see a cancelled task
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, conn: _Connection) -> RecordedRequest | None:
        line = await conn.readline()
        if not line.strip():
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await conn.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await conn.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await conn.readline()
                    break
                body += await conn.readexactly(size)
                await conn.readline()
        else:
            body = await conn.readexactly(int(headers.get("content-length", "0") or 0))
        parts = urlsplit(target)
        return RecordedRequest(
            method=method,
            path=parts.path,
            query=dict(parse_qsl(parts.query)),
            headers=headers,
            body=body,
            connection=conn.number,
            received_at=time.monotonic(),
        )

    async def _respond(self, conn: _Connection, request: RecordedRequest, plan: Plan) -> bool:
        reply = plan.reply
        request.reply = reply
        writer = conn.writer
        if reply is not None and reply.headers_delay:
            watcher = asyncio.ensure_future(conn.watch_close())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), reply.headers_delay)
            if conn.closed.is_set():
                request.client_closed_at = time.monotonic()
                self._notify()
                return False
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if reply is not None and reply.status != 200:
            plan = self.error_plan(reply)
        head = [f"HTTP/1.1 {plan.status} {REASONS.get(plan.status, 'Status')}"]
        headers = {"connection": "keep-alive", **plan.headers}
        if plan.frames is None:
            headers["content-length"] = str(len(plan.body))
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + plan.body)
            await writer.drain()
            request.finished_at = time.monotonic()
            self._notify()
            return True
        headers["transfer-encoding"] = "chunked"
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        await writer.drain()
        watcher = asyncio.ensure_future(conn.watch_close())
        try:
            keep_open = await self._stream(conn, request, plan)
        finally:
            if conn.closed.is_set() and request.finished_at is None and request.client_closed_at is None:
                request.client_closed_at = time.monotonic()
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self._notify()
        return keep_open and not conn.closed.is_set()

    async def _stream(self, conn: _Connection, request: RecordedRequest, plan: Plan) -> bool:
        """Write the frames with pacing and faults; False when the connection must not be reused.

        Paced frames go out one write each. Unpaced ones after the first are written in batches of up
        to 16 KB, as a busy server's do (one syscall per frame would make this server, not the
        client under test, the bottleneck of a benchmark).
        """
        reply = plan.reply or Reply()
        writer = conn.writer
        interval = 1.0 / reply.tokens_per_s if reply.tokens_per_s else 0.0
        batch = bytearray()

        async def pause(seconds: float) -> bool:
            """Sleep unless the client leaves first; True if it left."""
            if seconds <= 0:
                return conn.closed.is_set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), seconds)
            return conn.closed.is_set()

        async def flush() -> None:
            if batch:
                writer.write(bytes(batch))
                batch.clear()
                await writer.drain()
                request.last_frame_at = time.monotonic()

        def chunk(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data)

        if await pause(reply.first_chunk_delay):
            return False
        try:
            for index, frame in enumerate(plan.frames or ()):
                if conn.closed.is_set():
                    return False
                if index in (reply.stall_after, reply.drop_after, reply.cut_after):
                    await flush()
                if reply.stall_after == index:
                    await conn.closed.wait()
                    return False
                if reply.cut_after == index:
                    break
                if reply.drop_after == index:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return False
                if reply.malformed_after == index:
                    batch += chunk(plan.malformed)
                    break
                if reply.error_after == index:
                    batch += chunk(plan.error_frame)
                    break
                if index and interval and await pause(interval):
                    return False
                batch += chunk(frame)
                request.frames_sent += 1
                if interval or index == 0 or len(batch) >= 16384:
                    await flush()
            batch += b"0\r\n\r\n"
            await flush()
        except (ConnectionError, OSError):
            return False
        request.finished_at = time.monotonic()
        return True


def main(server_cls: type[FakeServer], argv: list[str] | None = None) -> None:
    """Run a fake server in the foreground: ``python -m tests.fakes.<dialect>_server --port 0``.

    Prints ``READY <port>`` on stdout once listening. ``--script FILE`` loads a JSON object
    ``{"replies": [...], "default": {...}}`` (Reply fields); the same can be posted later to
    ``/_fake/replies``. ``GET /_fake/requests`` returns what arrived.
    """
    parser = argparse.ArgumentParser(description=f"fake {server_cls.dialect} server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", type=Path, default=None)
    args = parser.parse_args(argv)
    server = server_cls(host=args.host, port=args.port)
    if args.script is not None:
        data = json.loads(args.script.read_text())
        server.script(*(Reply.from_dict(r) for r in data.get("replies", [])))
        if data.get("default") is not None:
            server.default_reply = Reply.from_dict(data["default"])

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        serving = asyncio.ensure_future(server.serve_forever())
        while server._server is None:
            await asyncio.sleep(0.01)
        print(f"READY {server.port}", flush=True)
        await stop.wait()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)

    asyncio.run(run())
    sys.exit(0)
