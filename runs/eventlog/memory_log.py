"""The in-memory event log: one process (the embedded default), a bounded deque per conversation."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from runs.event_encoding import event_kind
from runs.eventlog.base import (
    BATCH_WRITERS,
    READ_PAGE,
    RESTART_GAP,
    BatchId,
    EventLog,
    LoggedEvent,
    Replay,
    StaleBatch,
)


class _MemoryStream:
    __slots__ = ("batches", "bytes", "counter", "events", "touched")

    def __init__(self) -> None:
        self.batches: dict[str, tuple[int, int]] = {}  # writer -> (its last batch, that batch's first seq)
        self.counter = 0
        self.bytes = 0  # payload bytes held in ``events``
        self.events: deque[LoggedEvent] = deque()
        self.touched = time.monotonic()


class MemoryEventLog(EventLog):
    """One process: a bounded deque per conversation, delivered to listeners on append."""

    backend = "memory"

    def __init__(self, *, maxlen: int, ttl: float, max_bytes: int | None = None) -> None:
        super().__init__()
        self.maxlen = maxlen
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._streams: dict[str, _MemoryStream] = {}
        self._last_expiry = time.monotonic()

    def _stream(self, conversation_id: str) -> _MemoryStream:
        stream = self._streams.get(conversation_id)
        if stream is None:
            stream = self._streams[conversation_id] = _MemoryStream()
        stream.touched = time.monotonic()
        return stream

    def _expire(self) -> None:
        now = time.monotonic()
        if now - self._last_expiry < 60:
            return
        self._last_expiry = now
        for key in [
            k for k, s in self._streams.items() if now - s.touched > self.ttl and k not in self._listeners
        ]:
            del self._streams[key]

    async def append(
        self,
        conversation_id: str,
        payloads: Sequence[bytes],
        *,
        kinds: Sequence[str] | None = None,
        floor: int = 0,
        owner_id: int | None = None,
        batch_id: BatchId | None = None,
    ) -> int:
        self._expire()
        stream = self._stream(conversation_id)
        if batch_id is not None:
            writer, number = batch_id
            seen = stream.batches.pop(writer, None)
            if seen is not None:
                stream.batches[writer] = seen  # most recently used last
                if number == seen[0]:
                    return seen[1]
                if number < seen[0]:
                    raise StaleBatch(f"batch {number} of writer {writer} follows batch {seen[0]}")
        if stream.counter < floor:
            stream.counter = floor + (
                RESTART_GAP if not stream.events and stream.counter == 0 and floor else 0
            )
        first = stream.counter + 1
        if kinds is None:
            kinds = [event_kind(payload) for payload in payloads]
        batch = []
        for payload, kind in zip(payloads, kinds, strict=True):
            stream.counter += 1
            logged = LoggedEvent(stream.counter, payload, kind)
            stream.events.append(logged)
            stream.bytes += len(payload)
            batch.append(logged)
        # The caps drop the oldest events; the byte cap never drops this batch's.
        while len(stream.events) > self.maxlen or (
            self.max_bytes is not None and stream.bytes > self.max_bytes and len(stream.events) > len(batch)
        ):
            stream.bytes -= len(stream.events.popleft().payload)
        if batch_id is not None:
            stream.batches[batch_id[0]] = (batch_id[1], first)
            if len(stream.batches) > 2 * BATCH_WRITERS:
                del stream.batches[next(iter(stream.batches))]
        self.appended += len(batch)
        if batch:
            self._dispatch(conversation_id, owner_id, batch)
        return first

    async def read_after(self, conversation_id: str, after_seq: int, *, limit: int = READ_PAGE) -> Replay:
        stream = self._streams.get(conversation_id)
        if stream is None:
            return Replay(covered=after_seq == 0, events=[], last_seq=0)
        last = stream.counter
        if after_seq > last:
            return Replay(covered=False, events=[], last_seq=last)
        if after_seq == last:
            return Replay(covered=True, events=[], last_seq=last)
        oldest = stream.events[0].seq if stream.events else last + 1
        if after_seq + 1 < oldest:
            return Replay(covered=False, events=[], last_seq=last)
        start = after_seq + 1 - oldest
        events = [stream.events[i] for i in range(start, min(len(stream.events), start + limit))]
        return Replay(covered=True, events=events, last_seq=last)

    async def last_seq(self, conversation_id: str) -> int:
        stream = self._streams.get(conversation_id)
        return stream.counter if stream else 0

    async def ping(self) -> dict[str, Any]:
        return {"status": "ok", "backend": self.backend, "conversations": len(self._streams)}
