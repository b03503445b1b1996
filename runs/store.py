"""The database steps of the run engine (sync: each runs in Django's thread through ``db``).

What one execution writes (its reply's row, checkpoints, the final state) and what the manager
reads and writes for the runs it owns (heartbeat, stop flags). No event is emitted here.
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import Agent
from conversations.models import (
    Conversation,
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
)
from conversations.services import conversation_idle_expiry
from providers.base import ChatMessage
from runs.history import chat_history
from runs.models import HOLDING_RUN_STATUSES, Run, RunStatus
from runs.outcomes import Outcome

db = sync_to_async  # ORM work runs in Django's sync thread (thread_sensitive=True)


def heartbeat(run_ids: list[str]) -> None:
    Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now())


def stop_requested(run_ids: list[str]) -> list[str]:
    """Of these runs, those told to stop (the flag) and those whose row was deleted."""
    flags = dict(Run.objects.filter(pk__in=run_ids).values_list("pk", "cancel_requested"))
    present = {str(pk): flag for pk, flag in flags.items()}
    return [run_id for run_id in run_ids if present.get(str(run_id), True)]


def vanished(run_id: uuid.UUID | str, conversation_id: uuid.UUID | str) -> tuple[bool, bool]:
    """(the run's row is gone, its conversation's too): deleted while the run replied."""
    if Run.objects.filter(pk=run_id).exists():
        return False, False
    return True, not Conversation.objects.filter(pk=conversation_id).exists()


def stop_orphan_reply(message_id: uuid.UUID | str, content: str) -> None:
    """A reply whose run was deleted under it (its conversation stays): keep it as stopped."""
    Message.objects.filter(pk=message_id, status=MessageStatus.STREAMING).update(
        content=content, status=MessageStatus.STOPPED, updated_at=timezone.now()
    )


def next_queued_run_id(conversation_id: uuid.UUID | str) -> str | None:
    if Run.objects.filter(conversation_id=conversation_id, status__in=HOLDING_RUN_STATUSES).exists():
        return None
    run = (
        Run.objects.filter(conversation_id=conversation_id, status=RunStatus.QUEUED)
        .order_by("created_at")
        .first()
    )
    return str(run.pk) if run else None


def new_reply(run: Run) -> Message:
    """The reply's row, not saved yet: its id goes out in run_started at once (see store_reply)."""
    return Message(
        id=uuid.uuid4(),
        conversation_id=run.conversation_id,
        agent=run.agent,
        parent_id=run.trigger_message_id,  # the message it answers (or the cut reply it continues)
        role=MessageRole.AGENT,
        type=MessageType.MESSAGE,
        status=MessageStatus.STREAMING,
        metadata={"provider": run.agent.provider, "model": run.agent.model, "run_id": str(run.pk)},
    )


def reply_of(message_id: uuid.UUID | str) -> Message | None:
    """A paused run's reply, as it resumes."""
    return Message.objects.filter(pk=message_id).select_related("agent").first()


def store_reply(
    message: Message,
    run_id: uuid.UUID | str,
    seq: int,
    *,
    trigger_seq: tuple[str, int] | None = None,
    touch: bool = False,
) -> None:
    with transaction.atomic():
        if trigger_seq is not None:
            Message.objects.filter(pk=trigger_seq[0], seq__isnull=True).update(seq=trigger_seq[1])
        if touch:
            mark_activity(Conversation.objects.filter(pk=message.conversation_id))
        message.seq = seq
        message.save(force_insert=True)
        Run.objects.filter(pk=run_id).update(reply_message=message)
        Conversation.objects.filter(pk=message.conversation_id, last_seq__lt=seq).update(last_seq=seq)


def mark_activity(conversations: QuerySet[Conversation]) -> None:
    """A person's message was sent: ``updated_at``, and the idle expiry pushed on (active ones)."""
    conversations.filter(status=ConversationStatus.ACTIVE).update(
        updated_at=timezone.now(), expires_at=conversation_idle_expiry()
    )


def checkpoint(
    message_id: uuid.UUID | str, content: str, conversation_id: uuid.UUID | str, last_seq: int
) -> None:
    Message.objects.filter(pk=message_id, status=MessageStatus.STREAMING).update(content=content)
    Conversation.objects.filter(pk=conversation_id, last_seq__lt=last_seq).update(last_seq=last_seq)


def reply_history(conversation: Conversation, agent: Agent, reply_id: uuid.UUID) -> list[ChatMessage]:
    return chat_history(conversation=conversation, agent=agent, exclude_message_id=reply_id)


def finish(
    run_id: uuid.UUID | str,
    message_id: uuid.UUID | str | None,
    *,
    content: str,
    outcome: Outcome,
    usage: dict[str, int],
    metadata: dict[str, Any],
) -> bool:
    """Write the final state. False if someone else (the sweeper) already finished the run."""
    now = timezone.now()
    with transaction.atomic():
        updated = Run.objects.filter(pk=run_id, status=RunStatus.RUNNING).update(
            status=outcome.status, finished_at=now, usage=usage, error=outcome.error
        )
        if not updated:
            return False
        if message_id is not None:
            message = Message.objects.select_for_update().get(pk=message_id)
            message.content = content
            message.status = outcome.message_status
            message.metadata = {**message.metadata, **metadata}
            message.save(update_fields=["content", "status", "metadata", "updated_at"])
        run = Run.objects.get(pk=run_id)
        Agent.objects.filter(pk=run.agent_id).update(last_active_at=now)
    return True


def checkpoint_seq(conversation_id: uuid.UUID | str, last_seq: int) -> None:
    Conversation.objects.filter(pk=conversation_id, last_seq__lt=last_seq).update(
        last_seq=last_seq, updated_at=timezone.now()
    )
