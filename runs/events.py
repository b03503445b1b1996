"""Appending a conversation's events to its log: batched only when the path is busy.

The engine emits typed domain events (``runs.domain_events``); the writer encodes each one the
canonical way (``runs.event_encoding``) and the log keeps its kind beside the encoded payload.

A run emits many small events (one per token). ``EventWriter`` sends an event at once when no
append is in flight, and coalesces whatever arrives while one is (consecutive chunks of the same
message become one chunk), so an idle path adds no delay and a busy one makes few round trips.
A failed append (Redis restarting) is retried with the same events, in order: nothing is dropped.

No event it logs makes a frame larger than ``frame_bytes`` (NEXUS_WS_MAX_MESSAGE_BYTES): a chunk
is never merged past ``chunk_chars`` characters and a longer delta is split, and any other event
too large has its largest fields cut to fit (``runs.event_encoding.encode_event_fitted``).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

from django.conf import settings

from runs.domain_events import AgentMessage, DomainEvent, RunFinished, StreamingChunk
from runs.event_encoding import chunk_chars, encode_event_fitted, event
from runs.eventlog.base import EventLog, EventLogUnavailable

logger = logging.getLogger(__name__)


class EventWriter:
    """Ordered, coalescing appender for one conversation's events.

    Each batch carries a batch id (the writer's id and the batch's number, reused on a retry), so
    a retry of an append that did reach the log (Redis ran it, but the reply timed out) is not
    appended twice: the log returns the seqs the first append got.
    """

    def __init__(
        self,
        log: EventLog,
        conversation_id: str,
        *,
        owner_id: int | None,
        floor: int,
        frame_bytes: int | None = None,
    ) -> None:
        self.log = log
        self.frame_bytes = frame_bytes or settings.NEXUS_WS_MAX_MESSAGE_BYTES
        self.chunk_chars = chunk_chars(self.frame_bytes)
        self.conversation_id = conversation_id
        self.owner_id = owner_id
        self.last_seq = floor
        self._id = secrets.token_hex(8)  # with a batch's number, the batch id that makes a retry idempotent
        self._batches = 0
        self._pending: list[dict[str, Any]] = []
        self._tracked: list[tuple[int, asyncio.Future[int]]] = []  # (index in _pending, its seq)
        self._in_flight: list[asyncio.Future[int]] = []  # resolved when the append under way ends
        self._flusher: asyncio.Task[None] | None = None
        self._held = False

    def hold(self) -> None:
        """Queue events without appending them until ``release`` (in order, nothing dropped)."""
        self._held = True

    def release(self) -> None:
        self._held = False
        if self._pending:
            self._kick()

    def emit(self, evt: DomainEvent) -> None:
        """Queue an event; it is appended at once if the path is idle. (A reply's text streams
        through ``emit_chunk``, which merges it into a pending chunk.)"""
        self._pending.append(event(evt))
        self._kick()

    def emit_tracked(self, evt: DomainEvent) -> asyncio.Future[int]:
        """Queue an event like ``emit``, without waiting; the future gets its seq once it is logged."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(event(evt))
        self._tracked.append((len(self._pending) - 1, future))
        self._kick()
        return future

    def logged(self) -> asyncio.Future[int]:
        """A future that gets the last seq once everything emitted so far is in the log. Unlike
        ``flush``, it does not wait for events emitted after this call."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._pending:
            self._tracked.append((len(self._pending) - 1, future))
        elif self._flusher is not None and not self._flusher.done():
            self._in_flight.append(future)
        else:
            future.set_result(self.last_seq)
        return future

    def emit_chunk(self, *, message_id: str, agent_id: str, chunk: str) -> None:
        """Queue a text chunk, merged into a still-pending chunk of the same message while the
        merged text stays within ``chunk_chars``; a longer chunk goes out in several.

        The hot path (one call per token): a token merged into the pending chunk costs one string
        concatenation, no event object; a ``StreamingChunk`` is built only for a new chunk."""
        if self._pending:
            last = self._pending[-1]
            data = last["data"]
            if last["type"] == "streaming_chunk" and data["messageId"] == message_id and not data["isDone"]:
                room = self.chunk_chars - len(data["chunk"])
                if room > 0:
                    data["chunk"] += chunk[:room]
                    chunk = chunk[room:]
        for start in range(0, len(chunk), self.chunk_chars):
            self.emit(
                StreamingChunk(
                    message_id=message_id, agent_id=agent_id, chunk=chunk[start : start + self.chunk_chars]
                )
            )

    async def flush(self) -> int:
        """Wait until everything emitted so far is in the log; the last seq written."""
        while self._flusher is not None and not self._flusher.done():
            # shield: a cancelled caller (a stopped run) must not cancel the append itself
            await asyncio.shield(self._flusher)
        return self.last_seq

    async def emit_now(self, evt: DomainEvent) -> int:
        """Append one event after everything before it; its seq."""
        self.emit(evt)
        return await self.flush()

    def _kick(self) -> None:
        if self._held:
            return
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        delay = 0.05
        while self._pending:
            self._batches += 1
            batch_id = (self._id, self._batches)  # the same on every retry of this batch
            batch, self._pending = self._pending, []
            tracked, self._tracked = self._tracked, []
            payloads = [encode_event_fitted(evt, self.frame_bytes) for evt in batch]
            kinds = [evt["type"] for evt in batch]
            while True:
                try:
                    first = await self.log.append(
                        self.conversation_id,
                        payloads,
                        kinds=kinds,
                        floor=self.last_seq,
                        owner_id=self.owner_id,
                        batch_id=batch_id,
                    )
                    break
                except EventLogUnavailable:
                    logger.warning("event log unavailable; retrying %d event(s)", len(payloads))
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            delay = 0.05
            self.last_seq = first + len(payloads) - 1
            in_flight, self._in_flight = self._in_flight, []
            for index, future in tracked:
                if not future.done():
                    future.set_result(first + index)
            for future in in_flight:
                if not future.done():
                    future.set_result(self.last_seq)


def emit_reply_finished(
    writer: EventWriter,
    *,
    run_id: str,
    status: str,
    usage: dict[str, int],
    error: dict[str, Any] | None = None,
    agent_id: str,
    agent_name: str,
    message_id: str,
    content: str,
    message_status: str,
    metadata: dict[str, Any],
) -> None:
    """A run's reply in its final state (``agent_message``), then the run's end (``run_finished``):
    the pair every run that ends with its reply emits, in this order (its execution, the sweeper)."""
    writer.emit(
        AgentMessage(
            message_id=message_id,
            agent_id=agent_id,
            agent_name=agent_name,
            content=content,
            status=message_status,
            metadata=metadata,
        )
    )
    writer.emit(
        RunFinished(
            run_id=run_id, status=status, usage=usage, agent_id=agent_id, message_id=message_id, error=error
        )
    )
