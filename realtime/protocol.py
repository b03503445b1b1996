"""The WebSocket wire protocol of SPEC section 4: parse client frames, render server frames.

Pure Python: nothing from Django. Every malformed input becomes a ``ProtocolError`` with one of
the fixed error codes, which the consumer turns into an ``error`` frame (never a dropped socket).

Conversation events are stored in the event log already rendered as JSON without their ``seq``;
``frame_with_seq`` splices the seq in, so a chunk is serialised once however many sockets watch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from runs.event_encoding import (  # noqa: F401  (re-exported: the faces read them here)
    FRAME_OVERHEAD,
    MAX_JSON_BYTES_PER_CHAR,
    SEQ_MARGIN,
    chunk_chars,
    encode_event,
    encode_event_fitted,
    event,
    event_data,
    event_kind,
    fit_fields,
    fit_logged,
    frame_with_seq,
    now_iso,
)

if TYPE_CHECKING:
    from runs.eventlog.base import LoggedEvent

PROTOCOL_VERSION = "1.0"

ERROR_CODES = frozenset(
    {
        "invalid_json",
        "unknown_type",
        "validation_error",
        "not_found",
        "forbidden",
        "rate_limited",
        "message_too_large",
        "conflict",
        "provider_error",
        "provider_rate_limited",
        "provider_timeout",
        "provider_unavailable",
        "agent_unavailable",
        "internal",
    }
)

# A message's content is bounded by the frame size here; its length quota
# (NEXUS_MAX_CONTENT_CHARS, message_too_large) is the run service's, the same on every path.
# PostgreSQL stores no NUL character, in text or in jsonb: refused here, not failed on there.
NUL_MESSAGE = "Must not contain NUL characters (\\u0000)."
MAX_ID_CHARS = 128


class ProtocolError(Exception):
    """A client frame the server cannot act on. ``code`` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str, details: Any = None) -> None:
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


# --- Client frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Initialize:
    conversation_id: str | None = None
    agent_id: str | None = None
    context: dict[str, Any] | None = None
    last_seq: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMessage:
    content: str
    context: dict[str, Any] | None = None
    agent_id: str | None = None
    client_message_id: str | None = None
    attachments: list[str] | None = None  # stored file ids (docs/files.md, "Attachments")


@dataclass(frozen=True, slots=True, kw_only=True)
class Query(UserMessage):
    """Seed 003's ``query``: a user message that, on ``/ws/agent`` before any ``initialize``,
    opens a conversation with the user's default agent (realtime/dialects/seed003.py)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    run_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    tool_call_id: str
    result: Any
    is_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """``approve`` or ``deny`` a tool call that waits for approval (``approval_required``)."""

    tool_call_id: str
    approve: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Feedback:
    message_id: str
    rating: str | None
    comment: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Branch:
    """``regenerate``, ``continue`` or ``select`` a reply/message (the message tree)."""

    action: str
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Edit:
    """Edit and resend: ``content`` stored beside the person's earlier message ``message_id``."""

    message_id: str
    content: str
    client_message_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    last_seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    pass


ClientFrame = (
    Initialize | UserMessage | Stop | ToolResult | Decision | Feedback | Branch | Edit | Resume | Ping | Pong
)


class _Fields:
    """Reads a frame's fields from the top level or from ``data`` (seed 001 clients use the top)."""

    def __init__(self, frame: dict[str, Any]) -> None:
        data = frame.get("data")
        if data is not None and not isinstance(data, dict):
            raise ProtocolError(
                "validation_error", "data must be an object.", {"data": "Expected an object."}
            )
        self.values = {**{k: v for k, v in frame.items() if k not in {"type", "data"}}, **(data or {})}
        self.errors: dict[str, str] = {}

    def get(self, *names: str) -> Any:
        for name in names:
            if name in self.values and self.values[name] is not None:
                return self.values[name]
        return None

    def string(self, *names: str, required: bool = False, limit: int | None = MAX_ID_CHARS) -> str | None:
        value = self.get(*names)
        if value is None:
            if required:
                self.errors[names[0]] = "This field is required."
            return None
        if not isinstance(value, str):
            self.errors[names[0]] = "Expected a string."
            return None
        if limit is not None and len(value) > limit:
            self.errors[names[0]] = f"At most {limit} characters."
            return None
        if required and not value:
            self.errors[names[0]] = "This field is required."
            return None
        if "\x00" in value:
            self.errors[names[0]] = NUL_MESSAGE
            return None
        return value

    def seq(self, *names: str, required: bool = False) -> int | None:
        value = self.get(*names)
        if value is None:
            if required:
                self.errors[names[0]] = "This field is required."
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.errors[names[0]] = "Expected a non-negative integer."
            return None
        return value

    def obj(self, *names: str) -> dict[str, Any] | None:
        value = self.get(*names)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.errors[names[0]] = "Expected an object."
            return None
        if _has_nul(value):
            self.errors[names[0]] = NUL_MESSAGE
            return None
        return value

    def check(self) -> None:
        if self.errors:
            raise ProtocolError("validation_error", "Invalid frame.", self.errors)


def _has_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character (in a string or a key) anywhere."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _content(fields: _Fields, *names: str) -> str:
    content = fields.string(*names, required=True, limit=None)
    if content is not None and not content.strip():
        fields.errors[names[0]] = "Must not be empty."
    return content or ""


MAX_ATTACHMENTS = 20


def _attachments(fields: _Fields) -> list[str] | None:
    value = fields.values.get("attachments")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > MAX_ATTACHMENTS
        or not all(isinstance(v, str) and v and "\x00" not in v for v in value)
    ):
        fields.errors["attachments"] = f"A list of at most {MAX_ATTACHMENTS} file ids."
        return None
    return value or None


def parse_client_frame(raw: str | bytes | None) -> ClientFrame:
    """Parse one client frame. Raises ProtocolError with a code for anything malformed."""
    if raw is None or isinstance(raw, bytes | bytearray):
        raise ProtocolError("invalid_json", "Frames are JSON text; binary frames are not accepted.")
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ProtocolError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(frame, dict):
        raise ProtocolError("invalid_json", "A frame is a JSON object with a type.")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("validation_error", "The frame has no type.", {"type": "This field is required."})
    fields = _Fields(frame)
    result: ClientFrame
    match kind:
        case "user_message" | "text":
            content = _content(fields, "content")
            result = UserMessage(
                content=content,
                context=fields.obj("context"),
                agent_id=fields.string("agent_id", "agentId"),
                client_message_id=fields.string("client_message_id", "clientMessageId"),
                attachments=_attachments(fields),
            )
        case "query":
            content = _content(fields, "query", "content")
            result = Query(
                content=content,
                context=fields.obj("context"),
                agent_id=fields.string("agent_id", "agentId"),
                client_message_id=fields.string("client_message_id", "clientMessageId"),
            )
        case "initialize":
            result = Initialize(
                conversation_id=fields.string("conversation_id", "sessionId", "session_id", "conversationId"),
                agent_id=fields.string("agent_id", "agentId"),
                context=fields.obj("context"),
                last_seq=fields.seq("last_seq", "lastSeq"),
            )
        case "stop":
            result = Stop(run_id=fields.string("run_id", "runId"))
        case "tool_result":
            call_id = fields.string("toolCallId", "tool_call_id", required=True)
            if "result" not in fields.values:
                fields.errors["result"] = "This field is required."
            elif _has_nul(fields.values["result"]):
                fields.errors["result"] = NUL_MESSAGE
            is_error = fields.get("is_error", "isError")
            if is_error is not None and not isinstance(is_error, bool):
                fields.errors["is_error"] = "Expected a boolean."
            result = ToolResult(
                tool_call_id=call_id or "", result=fields.values.get("result"), is_error=bool(is_error)
            )
        case "approve" | "deny":
            call_id = fields.string("toolCallId", "tool_call_id", required=True)
            result = Decision(tool_call_id=call_id or "", approve=kind == "approve")
        case "feedback":
            message_id = fields.string("messageId", "message_id", required=True)
            rating = fields.get("rating")
            # a tuple, not a set: rating may be any JSON value, a list or an object too
            if rating is not None and rating not in ("positive", "negative"):
                fields.errors["rating"] = "positive, negative or null."
            comment = fields.string("comment", limit=4000)
            result = Feedback(message_id=message_id or "", rating=rating, comment=comment or "")
        case "regenerate" | "continue" | "select":
            message_id = fields.string("message_id", "messageId", required=True)
            result = Branch(action=kind, message_id=message_id or "")
        case "edit":
            message_id = fields.string("message_id", "messageId", required=True)
            content = _content(fields, "content")
            result = Edit(
                message_id=message_id or "",
                content=content,
                client_message_id=fields.string("client_message_id", "clientMessageId"),
            )
        case "resume":
            result = Resume(last_seq=fields.seq("last_seq", "lastSeq", required=True) or 0)
        case "ping":
            result = Ping()
        case "pong":
            result = Pong()
        case _:
            raise ProtocolError("unknown_type", f"Unknown frame type {kind[:64]!r}.", {"type": kind[:64]})
    fields.check()
    return result


# --- Server frames ------------------------------------------------------------------------------


def session_state_frame(state: dict[str, Any], frame_bytes: int) -> str:
    """The ``session_state`` frame, at most ``frame_bytes``: the largest messages' content is cut
    first, each flagged ``content_truncated: true`` (the client reads them whole over REST)."""
    frame = control_frame("session_state", state)
    excess = len(frame.encode()) - frame_bytes
    if excess <= 0:
        return frame
    messages = [dict(m) for m in state.get("messages") or []]
    for message in sorted(messages, key=lambda m: len(m.get("content") or ""), reverse=True):
        if excess <= 0:
            break
        before = len(orjson.dumps(message, default=str))
        message.update(fit_fields({"content": message.get("content") or ""}, excess))
        excess -= before - len(orjson.dumps(message, default=str))
    return control_frame("session_state", {**state, "messages": messages})


def control_frame(kind: str, data: dict[str, Any] | None = None) -> str:
    """A frame outside the conversation's sequence (connection, ack, error, pong...)."""
    frame = {"type": kind, "timestamp": now_iso(), "data": data or {}}
    try:
        return orjson.dumps(frame).decode()
    except TypeError:
        # PostgreSQL's jsonb gives back a number a client wrote as 1e300 (in a context) as its 301
        # digits, an int past the 64 bits orjson writes: such numbers go out as the floats they were.
        return orjson.dumps(_wide_ints_as_floats(frame), default=str).decode()


def _wide_ints_as_floats(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _wide_ints_as_floats(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wide_ints_as_floats(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        try:
            return float(value)
        except OverflowError:
            return str(value)
    return value


def error_frame(
    code: str,
    message: str,
    details: Any = None,
    retry_after: float | None = None,
    client_message_id: str | None = None,
) -> str:
    """An ``error`` frame; ``client_message_id``: the refused frame's, so a client knows which of
    its messages was not taken (docs/protocol.md)."""
    data: dict[str, Any] = {"code": code, "message": message, "details": details}
    if retry_after is not None:
        data["retry_after"] = retry_after
    if client_message_id is not None:
        data["client_message_id"] = client_message_id
    return control_frame("error", data)


def info_frame(code: str, message: str) -> str:
    """An ``info`` frame: something the client should know that is not an error."""
    return control_frame("info", {"code": code, "message": message})


def sse_event(data: str, *, event_id: int | None = None, event_name: str | None = None) -> bytes:
    """One Server-Sent Event carrying one frame (``data``: a frame's JSON text, on one line)."""
    head = b"" if event_id is None else b"id: " + str(event_id).encode() + b"\n"
    if event_name is not None:
        head += b"event: " + event_name.encode() + b"\n"
    return head + b"data: " + data.encode() + b"\n\n"


def sse_comment(text: str) -> bytes:
    """An SSE comment line (the stream's greeting, its keep-alives): clients ignore it."""
    return b": " + text.encode() + b"\n\n"


# --- Logged events, read back ------------------------------------------------------------------
#
# A face needs an event's type to act on it (close a socket when its conversation was deleted or
# expired, end a stream at its run's ``run_finished``). The log keeps it beside the payload
# (``LoggedEvent.kind``); nothing looks for a name in the bytes: a tool result or a context can
# hold "conversation_deleted" too.


def event_fields(payload: bytes) -> tuple[str, dict[str, Any]]:
    """A logged event decoded: its type and its ``data``."""
    evt = orjson.loads(payload)
    data = evt.get("data")
    return str(evt.get("type") or ""), data if isinstance(data, dict) else {}


CONVERSATION_ENDINGS = frozenset({"session_expired", "conversation_deleted"})


def conversation_ending(evt: LoggedEvent) -> str | None:
    """``session_expired`` or ``conversation_deleted`` when a logged event says its conversation
    ended (a ``system`` event with that code), else None. Only a ``system`` event is decoded."""
    if evt.kind != "system":
        return None
    code = event_fields(evt.payload)[1].get("code")
    return code if code in CONVERSATION_ENDINGS else None
