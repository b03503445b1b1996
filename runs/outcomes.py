"""How a run ends (``Outcome``), and the ends decided by what the provider did: an error it raised
(``provider_failure``) or a reply past the length limit (``reply_too_long``), each told to the
watchers as it is decided."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from conversations.models import MessageStatus
from providers.base import ProviderError
from runs.domain_events import Info, RunError
from runs.events import EventWriter
from runs.models import RunStatus

logger = logging.getLogger(__name__)

PROVIDER_ERROR_CODES = {
    "rate_limited": "provider_rate_limited",
    "timeout": "provider_timeout",
    "unavailable": "provider_unavailable",
}
# Frames and the run's row carry the error's public message (nothing the upstream sent, no
# address); the full message, which may quote the upstream, goes to the log only.


@dataclass(slots=True)
class Outcome:
    """How a run ends: its status, its reply's status, the finish reason and the error."""

    status: str = RunStatus.COMPLETED
    message_status: str = MessageStatus.COMPLETE
    finish_reason: str | None = None
    error: dict[str, Any] = field(default_factory=dict)


def provider_failure(writer: EventWriter, run_id: str, exc: ProviderError) -> Outcome:
    message = getattr(exc, "public_message", None) or exc.message
    logger.warning("run %s: provider error (%s): %s", run_id, exc.kind, exc.message)
    if exc.kind == "incomplete":
        # Watchers are told why the reply ends here (the `error` frame), and the partial reply
        # is kept as `incomplete`, never passed off as complete.
        error = {"code": "provider_error", "message": message, "kind": exc.kind}
        writer.emit(RunError(code="provider_error", message=message, run_id=run_id, error_kind=exc.kind))
        return Outcome(status=RunStatus.INCOMPLETE, message_status=MessageStatus.INCOMPLETE, error=error)
    code = PROVIDER_ERROR_CODES.get(exc.kind, "provider_error")
    error = {"code": code, "message": message, "kind": exc.kind}
    writer.emit(
        RunError(
            code=code,
            message=message,
            run_id=run_id,
            error_kind=exc.kind,
            retry_after=getattr(exc, "retry_after", None),
        )
    )
    return Outcome(status=RunStatus.FAILED, message_status=MessageStatus.ERROR, error=error)


def reply_too_long(writer: EventWriter, run_id: str, max_chars: int) -> Outcome:
    """The reply reached NEXUS_MAX_REPLY_CHARS: it ends there, ``incomplete``, finish reason
    ``length`` (as a provider's own token limit), and watchers are told why."""
    logger.warning("run %s: the reply reached %d characters; cut there", run_id, max_chars)
    writer.emit(
        Info(
            code="reply_too_long",
            message=f"The reply reached the limit of {max_chars} characters and was cut there.",
            run_id=run_id,
            limit=max_chars,
        )
    )
    return Outcome(
        status=RunStatus.INCOMPLETE, message_status=MessageStatus.INCOMPLETE, finish_reason="length"
    )
