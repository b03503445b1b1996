"""The events of a conversation, typed: one small frozen class per kind the engine emits.

The engine builds these and hands them to ``runs.events.EventWriter.emit``; nothing in runs/
builds an event dict. ``runs.event_encoding`` turns one into the canonical JSON the event log
stores (which is also the native protocol's frame, so native sockets relay it byte for byte);
other wire dialects render a logged event with their codec in ``realtime/dialects/``
(docs/architecture.md, "Events and codecs").

``kind`` is the event's type on the wire and in the log (several domain events share ``system``:
the end of a session or a conversation, told apart by their ``code``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True, kw_only=True)
class UserMessage:
    """A user's message was stored (before any run replies to it)."""

    kind: ClassVar[str] = "user_message"
    message_id: str
    content: str
    client_message_id: str | None
    user_id: int | None
    parent_id: str | None = None  # the message it follows in the conversation's tree


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    kind: ClassVar[str] = "run_started"
    run_id: str
    agent_id: str
    message_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamingChunk:
    """Text of a reply as it streams; the last one of a reply has ``is_done`` and no text."""

    kind: ClassVar[str] = "streaming_chunk"
    message_id: str
    agent_id: str
    chunk: str
    is_done: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentMessage:
    """A run's reply in its final state."""

    kind: ClassVar[str] = "agent_message"
    message_id: str
    agent_id: str
    agent_name: str
    content: str
    status: str
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    """A run's end. ``message_id`` is None for a run with no reply; ``error`` for a failed run."""

    kind: ClassVar[str] = "run_finished"
    run_id: str
    status: str
    usage: dict[str, int]
    agent_id: str
    message_id: str | None = None
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCallRequested:
    kind: ClassVar[str] = "tool_call"
    tool_call_id: str
    tool: str
    parameters: dict[str, Any]
    message_id: str
    execution: str | None  # "server" or "client"; None for a call refused before it ran
    agent_id: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResultGiven:
    kind: ClassVar[str] = "tool_result"
    tool_call_id: str
    tool: str
    result: Any  # the tool's JSON result
    is_error: bool
    agent_id: str
    run_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequired:
    """A run paused at a tool call that waits for a person's ``approve`` or ``deny`` (stored: the
    pause outlives every socket and process, runs.approvals). ``expires_at``: denied then."""

    kind: ClassVar[str] = "approval_required"
    tool_call_id: str
    tool: str
    parameters: dict[str, Any]
    run_id: str
    agent_id: str
    message_id: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecided:
    """The first decision on a call that waited for approval: ``approved``, ``denied`` or
    ``timed_out`` (``decided_by``: the user's id; None for a timeout)."""

    kind: ClassVar[str] = "approval_decided"
    tool_call_id: str
    tool: str
    decision: str
    run_id: str
    decided_by: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunError:
    """Why a run fails or stops short (``kind``: the provider error's kind, when one caused it)."""

    kind: ClassVar[str] = "error"
    code: str
    message: str
    run_id: str
    error_kind: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Info:
    """Something watchers should know that is not an error (a limit reached, a session's end)."""

    kind: ClassVar[str] = "info"
    code: str
    message: str
    run_id: str | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cooldown:
    """An agent-agent session waits before its next turn."""

    kind: ClassVar[str] = "cooldown"
    agent_id: str
    until: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ConversationEnded:
    """A ``system`` event: a session or the conversation itself came to an end. Build one with
    the constructors below; ``code`` says which (clients and faces act on it)."""

    kind: ClassVar[str] = "system"
    code: str
    message: str
    status: str

    @classmethod
    def session_completed(cls) -> ConversationEnded:
        return cls(code="session_completed", message="The session is completed.", status="completed")

    @classmethod
    def session_stopped(cls) -> ConversationEnded:
        return cls(code="session_stopped", message="The session was stopped.", status="stopped")

    @classmethod
    def session_expired(cls) -> ConversationEnded:
        return cls(
            code="session_expired", message="The conversation expired after inactivity.", status="expired"
        )

    @classmethod
    def conversation_deleted(cls) -> ConversationEnded:
        return cls(code="conversation_deleted", message="The conversation was deleted.", status="deleted")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentChanged:
    """A ``system`` event: another agent answers the conversation from now on (``agents``: the
    conversation's agents as the client lists them)."""

    kind: ClassVar[str] = "system"
    code: ClassVar[str] = "agent_changed"
    message: str
    agent_id: str
    agents: list[dict[str, Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Branched:
    """The conversation's tree changed: a reply regenerated or continued, a message edited, a
    sibling selected (``run_id``: the run that answers, None for a selection)."""

    kind: ClassVar[str] = "branch"
    action: str  # "regenerate", "continue", "edit" or "select"
    message_id: str
    run_id: str | None


DomainEvent = (
    UserMessage
    | RunStarted
    | StreamingChunk
    | AgentMessage
    | RunFinished
    | ToolCallRequested
    | ToolResultGiven
    | ApprovalRequired
    | ApprovalDecided
    | RunError
    | Info
    | Cooldown
    | ConversationEnded
    | AgentChanged
    | Branched
)
