"""Conversation events as the event log stores them: built, encoded to JSON without their seq,
and fitted to the frame limit. Pure functions about events, used by the run engine (runs/) and
by the faces (realtime/) that send them; realtime/protocol.py re-exports them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """A conversation event, as stored in the event log (its seq is assigned on append)."""
    return {"type": kind, "timestamp": now_iso(), "data": data}


def encode_event(evt: dict[str, Any]) -> bytes:
    return orjson.dumps(evt)


def frame_with_seq(seq: int, payload: bytes) -> str:
    """The text frame of a logged event: its stored JSON with ``"seq"`` spliced in first."""
    return '{"seq":' + str(seq) + "," + payload[1:].decode()


# --- Frame size: no server frame is larger than the frame limit Nexus announces -------------------
#
# The limit is NEXUS_WS_MAX_MESSAGE_BYTES (1 MiB, in the `connection` frame's limits), the same
# for both directions: daphne cannot send a frame over its own limit (4x that) at all, and many
# clients refuse frames over 1 MiB (the `websockets` library's default). A reply's text reaches
# clients in chunks that each fit; an event that would still be larger (the final `agent_message`
# of a long reply, a big tool result) carries its largest fields cut to fit, each flagged
# `<field>_truncated: true`; the stored message is whole (docs/protocol.md, "Frame size").

SEQ_MARGIN = 32  # '"seq":<n>,' spliced into a logged event's JSON
FRAME_OVERHEAD = 1024  # a chunk's envelope: type, timestamp, seq, message and agent ids
MAX_JSON_BYTES_PER_CHAR = 6  # a control character is written "\u0001": the most one str char takes


def chunk_chars(frame_bytes: int) -> int:
    """The most characters of text one ``streaming_chunk`` carries, so its frame fits in
    ``frame_bytes`` whatever the characters are."""
    return max(1, (frame_bytes - FRAME_OVERHEAD) // MAX_JSON_BYTES_PER_CHAR)


def _cut(value: str, excess: int) -> str:
    """A prefix of ``value`` whose JSON is at least ``excess`` bytes shorter."""
    size = len(orjson.dumps(value))
    target = max(2, size - excess)  # bytes of the JSON string kept, its quotes included
    keep = len(value) * target // size
    while keep > 0 and len(orjson.dumps(value[:keep])) > target:
        keep = keep * 9 // 10
    return value[:keep]


def fit_fields(data: dict[str, Any], excess: int) -> dict[str, Any]:
    """``data`` with its largest fields cut (strings to a prefix, anything else to null) until its
    JSON is ``excess`` bytes shorter; each one cut gets ``<field>_truncated: true`` beside it."""
    fitted = dict(data)
    sizes = sorted(
        ((len(orjson.dumps(v, default=str)), k) for k, v in fitted.items() if v is not None),
        reverse=True,
    )
    for size, key in sizes:
        if excess <= 0:
            break
        flag = f"{key}_truncated"
        value = fitted[key]
        if isinstance(value, str):
            fitted[key] = _cut(value, excess + len(flag) + 8)
        else:
            fitted[key] = None
        fitted[flag] = True
        excess -= size - len(orjson.dumps(fitted[key], default=str)) - len(flag) - 8
    return fitted


def encode_event_fitted(evt: dict[str, Any], frame_bytes: int) -> bytes:
    """A conversation event as stored in the log, its frame (seq included) at most ``frame_bytes``."""
    payload = encode_event(evt)
    excess = len(payload) + SEQ_MARGIN - frame_bytes
    if excess <= 0:
        return payload
    return encode_event({**evt, "data": fit_fields(evt.get("data") or {}, excess)})


def fit_logged(payload: bytes, frame_bytes: int) -> bytes:
    """A logged event's payload cut to fit (events logged before this rule existed)."""
    if len(payload) + SEQ_MARGIN <= frame_bytes:
        return payload
    return encode_event_fitted(orjson.loads(payload), frame_bytes)
