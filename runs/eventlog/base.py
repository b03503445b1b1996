"""The event log's interface: what a logged event, a replay and a log are (``runs.eventlog``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

RESTART_GAP = 1_000_000
READ_PAGE = 1000
BATCH_WRITERS = 64  # writers whose last batch a conversation's log remembers, at least

BatchId = tuple[str, int]
"""A batch's id: (the writer's id, the batch's number). A writer's numbers strictly increase."""


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    seq: int
    payload: bytes  # the event's JSON without its seq (see runs.event_encoding.frame_with_seq)
    kind: str  # its type, kept beside it so a reader need not parse the payload to learn it


@dataclass(frozen=True, slots=True)
class Replay:
    """Events after a seq. ``covered`` is False when the log no longer holds them all (resync)."""

    covered: bool
    events: list[LoggedEvent]
    last_seq: int


Listener = Callable[[str, list[LoggedEvent]], None]
LostListener = Callable[[], None]


class EventLogUnavailable(Exception):
    """The log's backend cannot be reached."""


class StaleBatch(ValueError):
    """A batch older than one its writer has already appended (a writer never sends one)."""


class EventLog:
    """Interface shared by both logs. Listeners are plain callables run on the event loop."""

    backend = "abstract"

    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}
        self._firehose: set[Callable[[str, int | None, list[LoggedEvent]], None]] = set()
        self._lost: set[LostListener] = set()
        self.appended = 0  # events appended by this process, for stats

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
        """Append events; returns the seq of the first. ``floor``: the highest seq the caller knows.
        ``kinds``: each event's type (read from its payload when not given).

        With ``batch_id``, appending a batch the log already holds (a retry) appends nothing and
        returns the seq of its first event; one older than its writer's last raises ``StaleBatch``.
        """
        raise NotImplementedError

    async def read_after(self, conversation_id: str, after_seq: int, *, limit: int = READ_PAGE) -> Replay:
        raise NotImplementedError

    async def last_seq(self, conversation_id: str) -> int:
        raise NotImplementedError

    async def ping(self) -> dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        return None

    # -- live delivery -------------------------------------------------------------------------

    def watch(self, conversation_id: str, listener: Listener) -> None:
        self._listeners.setdefault(conversation_id, set()).add(listener)

    def unwatch(self, conversation_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(conversation_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._listeners[conversation_id]

    def watch_all(self, listener: Callable[[str, int | None, list[LoggedEvent]], None]) -> None:
        """Every conversation's events (the /ws/events/ monitor), with the conversation's owner id."""
        self._firehose.add(listener)

    def unwatch_all(self, listener: Callable[[str, int | None, list[LoggedEvent]], None]) -> None:
        self._firehose.discard(listener)

    def on_lost(self, listener: LostListener) -> None:
        """Called when live delivery was interrupted (the backend went away and came back)."""
        self._lost.add(listener)

    def off_lost(self, listener: LostListener) -> None:
        self._lost.discard(listener)

    def _dispatch(self, conversation_id: str, owner_id: int | None, events: list[LoggedEvent]) -> None:
        for listener in tuple(self._listeners.get(conversation_id, ())):
            try:
                listener(conversation_id, events)
            except Exception:
                logger.exception("event listener failed")
        for firehose_listener in tuple(self._firehose):
            try:
                firehose_listener(conversation_id, owner_id, events)
            except Exception:
                logger.exception("firehose listener failed")

    def _dispatch_lost(self) -> None:
        for listener in tuple(self._lost):
            try:
                listener()
            except Exception:
                logger.exception("lost listener failed")
