"""The shapes every server tool shares: its outcome, its context, its protocol, its safe error."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolOutcome:
    """What a tool call produced. ``result`` is JSON-serialisable; the model and watchers see it."""

    result: Any
    is_error: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """Who a tool runs for. Tools may use it to scope what they touch; none of it is secret."""

    user_id: int | None
    conversation_id: uuid.UUID | str | None
    agent_id: uuid.UUID | str | None = None


@runtime_checkable
class ServerTool(Protocol):
    """A tool that runs in the server process. ``parameters`` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        """Run with arguments already validated against ``parameters``; raise ToolError to refuse."""
        ...


class ToolError(Exception):
    """A failure whose message is safe to show to the model and to watchers.

    Any other exception escaping a tool is logged and reported as a generic failure, so its
    text (which may hold paths, hosts or data) never leaves the server.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_outcome(message: str) -> ToolOutcome:
    """The one shape of every failed tool call."""
    return ToolOutcome(result={"error": message}, is_error=True)
