"""The native protocol's codec (docs/protocol.md): the identity.

The log stores each event as its native frame without the seq, so rendering is splicing the seq
in: the stored bytes go out as they are, serialised once however many sockets watch (the relay's
hot path, bench/relay.py). An event logged before the frame limit rule is fitted here first.
"""

from __future__ import annotations

from runs.event_encoding import fit_logged, frame_with_seq
from runs.eventlog.base import LoggedEvent


class NativeCodec:
    name = "native"

    def render(self, evt: LoggedEvent, *, frame_bytes: int) -> tuple[str]:
        return (frame_with_seq(evt.seq, fit_logged(evt.payload, frame_bytes)),)


NATIVE = NativeCodec()
