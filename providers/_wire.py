"""Shared plumbing for the HTTP adapters: per-event-loop HTTP clients and fast stream framing.

Nothing provider-specific lives here: SSE and NDJSON framing are standards several providers use.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

import httpx

from core.egress import EgressPolicy

T = TypeVar("T")
# What keeps a per-loop value's closer alive: the generator parked at its yield, and its task.
_Guard = tuple[AsyncGenerator[None, None], asyncio.Task[None]]

logger = logging.getLogger(__name__)


class PerLoop(Generic[T]):
    """One value per running event loop, made on first use and closed with the loop.

    An httpx ``AsyncClient`` (and an SDK client wrapping one) belongs to the loop it first ran on,
    and creating one costs ~20 ms (SSL context), so each loop gets its own, reused across calls.
    Its keep-alive connections must be closed before the loop closes (or they leak and warn): a
    small async generator parked on the loop runs ``close`` when the loop shuts its async
    generators down, which ``asyncio.run``, ``asyncio.Runner`` (pytest-asyncio) and asgiref's
    ``async_to_sync`` all do.
    """

    def __init__(self, factory: Callable[[], T], close: Callable[[T], Awaitable[None]] | None = None) -> None:
        self._factory = factory
        self._close = close
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[T, _Guard | None]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self) -> T:
        loop = asyncio.get_running_loop()
        entry = self._values.get(loop)
        if entry is None:
            with self._lock:
                entry = self._values.get(loop)
                if entry is None:
                    value = self._factory()
                    entry = self._values[loop] = (value, self._guard(loop, value))
        return entry[0]

    def _guard(self, loop: asyncio.AbstractEventLoop, value: T) -> _Guard | None:
        if self._close is None:
            return None
        close = self._close

        async def closes_with_the_loop() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                await close(value)

        guard = closes_with_the_loop()
        # Run it to its yield; the loop now tracks it and closes it at shutdown. The entry keeps a
        # strong reference: the loop's own is weak, and a collected guard would close too early.
        started = loop.create_task(_advance(guard))
        return guard, started


async def _advance(guard: AsyncIterator[None]) -> None:
    await anext(guard)


async def close_http_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


HTTP_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=30.0)


def egress_transport(egress: EgressPolicy | None) -> httpx.AsyncBaseTransport | None:
    """The transport under an adapter's HTTP client: one that obeys ``egress`` (every connection,
    every redirect hop), or None (httpx's own) for an adapter built without a policy (tests, bench;
    the server always passes one, see ``agents.provider_config``)."""
    return egress.transport(limits=HTTP_LIMITS) if egress is not None else None


def new_http_client(egress: EgressPolicy | None = None) -> httpx.AsyncClient:
    """The HTTP client the adapters share per loop, sending through ``egress``'s transport.

    ``trust_env=False``: proxies and certificates come from configuration, never from the environment.
    Timeouts are given per request (see ``resilience.httpx_timeout``).
    """
    return httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(30.0),
        limits=HTTP_LIMITS,
        transport=egress_transport(egress),
    )


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """The response body as it arrives.

    Uncompressed bodies (streams always are, in practice) skip httpx's decoder and re-chunker
    pass, about a microsecond per chunk, which matters at tens of thousands of chunks a second.
    """
    encoding = response.headers.get("content-encoding", "").strip().lower()
    return response.aiter_raw() if encoding in ("", "identity") else response.aiter_bytes()


async def finish_body(chunks: AsyncIterator[bytes], grace: float = 0.25) -> None:
    """Read the rest of a body whose content is over (normally just the chunked-encoding terminator).

    A response closed before its end takes its connection with it; read to the end, the connection
    goes back to the pool and the next request skips a TCP handshake (about 1 ms of time to first
    token). A server that keeps talking is cut off after ``grace`` seconds.
    """
    try:
        async with asyncio.timeout(grace):
            async for _ in chunks:
                pass
    except Exception:  # the reply is complete: whatever happens now only costs the connection
        logger.debug("body not finished cleanly after the end of the stream", exc_info=True)


class SSEDecoder:
    """Incremental ``text/event-stream`` decoder yielding each event's ``data`` as bytes.

    Handles LF and CRLF line ends, several ``data:`` lines per event, comments (``: ping``) and
    ``event:``/``id:``/``retry:`` fields (ignored). Working on bytes avoids decoding text we never use.
    """

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The data of every event completed by ``chunk``."""
        if self._buffer:
            chunk = self._buffer + chunk
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self._data = []
            elif line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
        return events

    def close(self) -> list[bytes]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        self._buffer = b""
        return events


class LineDecoder:
    """Incremental NDJSON framing: the non-blank lines completed by each chunk."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._buffer:
            chunk = self._buffer + chunk
        elif chunk[-1:] == b"\n" and chunk.count(b"\n") == 1:
            return [chunk] if len(chunk) > 2 or chunk.strip() else []  # the usual case: one line per read
        lines = chunk.split(b"\n")
        self._buffer = lines.pop()
        return [line for line in lines if line.strip()]

    def close(self) -> list[bytes]:
        rest, self._buffer = self._buffer, b""
        return [rest] if rest.strip() else []
