"""Conversation events as the event log stores them: the canonical encoding of a domain event
(``runs.domain_events``) to JSON without its seq, fitted to the frame limit. Pure functions about
events, used by the run engine (runs/) and by the faces (realtime/) that send them;
realtime/protocol.py re-exports them.

The canonical encoding is the native protocol's frame (docs/protocol.md): ``{"type", "timestamp",
"data"}``, the type first. The log stores it, and the native codec (``realtime.dialects.native``)
relays the stored bytes as they are; other dialects render from it (docs/architecture.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, assert_never

import orjson

from runs.domain_events import (
    AgentChanged,
    AgentMessage,
    ApprovalDecided,
    ApprovalRequired,
    Branched,
    ConversationEnded,
    Cooldown,
    DomainEvent,
    Info,
    RunError,
    RunFinished,
    RunStarted,
    StreamingChunk,
    ToolCallRequested,
    ToolResultGiven,
    UserMessage,
)


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(evt: DomainEvent) -> dict[str, Any]:
    """A domain event as the event log stores it, before encoding (its seq is assigned on append)."""
    return {"type": evt.kind, "timestamp": now_iso(), "data": event_data(evt)}


def event_data(evt: DomainEvent) -> dict[str, Any]:
    """The ``data`` of a domain event's frame: the wire names, in the wire order (docs/protocol.md)."""
    match evt:
        case StreamingChunk():
            return {
                "messageId": evt.message_id,
                "agent_id": evt.agent_id,
                "chunk": evt.chunk,
                "isDone": evt.is_done,
            }
        case RunStarted():
            return {"run_id": evt.run_id, "agent_id": evt.agent_id, "message_id": evt.message_id}
        case AgentMessage():
            return {
                "messageId": evt.message_id,
                "agent_id": evt.agent_id,
                "agent_name": evt.agent_name,
                "content": evt.content,
                "status": evt.status,
                "metadata": evt.metadata,
            }
        case RunFinished():
            data: dict[str, Any] = {"run_id": evt.run_id, "status": evt.status, "usage": evt.usage}
            if evt.error:
                data["error"] = evt.error
            data["agent_id"] = evt.agent_id
            if evt.message_id is not None:
                data["message_id"] = evt.message_id
            return data
        case UserMessage():
            return {
                "messageId": evt.message_id,
                "content": evt.content,
                "role": "user",
                "client_message_id": evt.client_message_id,
                "user_id": evt.user_id,
                "parent_id": evt.parent_id,
            }
        case ToolCallRequested():
            return {
                "toolCallId": evt.tool_call_id,
                "tool": evt.tool,
                "parameters": evt.parameters,
                "messageId": evt.message_id,
                "execution": evt.execution,
                "agent_id": evt.agent_id,
                "run_id": evt.run_id,
            }
        case ToolResultGiven():
            return {
                "toolCallId": evt.tool_call_id,
                "tool": evt.tool,
                "result": evt.result,
                "is_error": evt.is_error,
                "agent_id": evt.agent_id,
                "run_id": evt.run_id,
            }
        case ApprovalRequired():
            return {
                "toolCallId": evt.tool_call_id,
                "tool": evt.tool,
                "parameters": evt.parameters,
                "run_id": evt.run_id,
                "agent_id": evt.agent_id,
                "messageId": evt.message_id,
                "expires_at": evt.expires_at.isoformat(),
            }
        case ApprovalDecided():
            return {
                "toolCallId": evt.tool_call_id,
                "tool": evt.tool,
                "decision": evt.decision,
                "approved": evt.decision == "approved",
                "decided_by": evt.decided_by,
                "run_id": evt.run_id,
            }
        case RunError():
            data = {"code": evt.code, "message": evt.message}
            details: dict[str, Any] = {"run_id": evt.run_id}
            if evt.error_kind is not None:
                data["kind"] = details["kind"] = evt.error_kind
            data["details"] = details
            if evt.retry_after is not None:
                data["retry_after"] = evt.retry_after
            return data
        case Info():
            data = {"code": evt.code, "message": evt.message}
            if evt.run_id is not None:
                data["run_id"] = evt.run_id
            if evt.limit is not None:
                data["limit"] = evt.limit
            return data
        case Cooldown():
            return {"agent_id": evt.agent_id, "until": evt.until.isoformat()}
        case ConversationEnded():
            return {"code": evt.code, "message": evt.message, "status": evt.status}
        case AgentChanged():
            return {"code": evt.code, "message": evt.message, "agent_id": evt.agent_id, "agents": evt.agents}
        case Branched():
            return {"action": evt.action, "message_id": evt.message_id, "run_id": evt.run_id}
        case _:
            assert_never(evt)


def encode_event(evt: dict[str, Any]) -> bytes:
    return orjson.dumps(evt)


_TYPE_FIRST = b'{"type":"'  # ``event`` puts the type first; ``encode_event`` keeps it


def event_kind(payload: bytes) -> str:
    """The type of an encoded event, for a payload logged without its kind beside it (the log
    keeps each event's kind: ``LoggedEvent.kind``; entries older than that have none).

    The type is read from its place at the start, where ``encode_event`` writes it, without
    decoding the rest (a long reply's final ``agent_message`` is a megabyte). A payload laid out
    otherwise is decoded whole."""
    start = len(_TYPE_FIRST)
    if payload.startswith(_TYPE_FIRST):
        end = payload.find(b'"', start)
        kind = payload[start:end]
        if end > start and b"\\" not in kind:
            return kind.decode()
    kind = orjson.loads(payload).get("type")
    return kind if isinstance(kind, str) else ""


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
