"""Domain errors: values with codes, shared by REST, WebSocket and SSE.

Services and selectors raise these; the REST exception handler and the WebSocket consumers turn
them into the one error shape of each surface (``{detail, code, timestamp}`` over HTTP, an
``error`` frame over WebSocket). The codes are the fixed enum of SPEC section 4.
"""

from __future__ import annotations

import uuid
from typing import Any


class NexusError(Exception):
    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, details: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after = retry_after


class ValidationFailed(NexusError):
    code = "validation_error"
    http_status = 400


class NotFound(NexusError):
    code = "not_found"
    http_status = 404


class Forbidden(NexusError):
    code = "forbidden"
    http_status = 403


class Conflict(NexusError):
    code = "conflict"
    http_status = 409


class RateLimited(NexusError):
    code = "rate_limited"
    http_status = 429


class TooLarge(NexusError):
    """Content past a size quota (a message, a conversation's context, a request body)."""

    code = "message_too_large"
    http_status = 413


class AgentUnavailable(NexusError):
    code = "agent_unavailable"
    http_status = 409


def parse_uuid(value: object, *, what: str) -> uuid.UUID:
    """A UUID from user input, or NotFound: a malformed id is simply an id that does not exist."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{what} not found.") from None
