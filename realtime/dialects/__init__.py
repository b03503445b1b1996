"""Wire dialects: one codec per protocol a client may speak, each rendering logged events to frames.

The engine (runs/) emits typed domain events (``runs.domain_events``) and the event log stores
each one in its canonical encoding (``runs.event_encoding``), which is the native protocol's frame
without its seq. A face reads logged events and hands each to the codec of the socket's dialect,
which returns the frames to send (none for an event the dialect has no frame for, several when
one event is several frames in that dialect). The native codec relays the stored bytes as they
are; the seed dialects' codecs come here next (issue 16). docs/architecture.md, "Events and codecs".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from runs.eventlog.base import LoggedEvent


class Codec(Protocol):
    """Renders logged events as one dialect's frames (JSON text), each at most ``frame_bytes``."""

    name: str

    def render(self, evt: LoggedEvent, *, frame_bytes: int) -> Sequence[str]: ...
