"""The limits of an agent-to-agent session: the turns it has taken, the tokens it has used, and
whether a claimed run may take one more turn (checked inside the claim, ``runs.dispatch.claim_run``)."""

from __future__ import annotations

import uuid

from django.utils import timezone

from conversations.models import (
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    SessionType,
)
from conversations.services import MAX_TURNS_DEFAULT
from runs.models import Run, RunStatus


def turns_taken(conversation_id: uuid.UUID | str) -> int:
    """Agent turns that produced a reply (any final status but error)."""
    return (
        Message.objects.filter(
            conversation_id=conversation_id, role=MessageRole.AGENT, type=MessageType.MESSAGE
        )
        .exclude(status__in=[MessageStatus.ERROR, MessageStatus.STREAMING])
        .count()
    )


def tokens_used(conversation_id: uuid.UUID | str) -> int:
    total = 0
    for usage in Run.objects.filter(conversation_id=conversation_id).values_list("usage", flat=True):
        total += int((usage or {}).get("total_tokens") or 0)
    return total


def turn_refusal(run: Run) -> str | None:
    """Why this claimed run must not take a turn, or None. Called inside the claim."""
    conversation = run.conversation
    if conversation.session_type != SessionType.AGENT_AGENT:
        return None
    settings = conversation.settings or {}
    if conversation.status != ConversationStatus.ACTIVE:
        reason = "session_not_active"
    elif turns_taken(conversation.pk) >= int(settings.get("max_turns", MAX_TURNS_DEFAULT)):
        reason = "turn_limit_reached"
    elif settings.get("token_budget") and tokens_used(conversation.pk) >= int(settings["token_budget"]):
        reason = "budget_exhausted"
    else:
        return None
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.STOPPED, finished_at=timezone.now(), error={"code": reason, "message": reason}
    )
    return reason
