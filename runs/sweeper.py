"""The sweeper: runs whose owner died, dispatches that were lost, conversations left idle.

Every process that serves clients or executes runs sweeps (``RunManager._sweeper_loop``, every
``SWEEP_SECONDS``): a run whose owner stopped heartbeating is declared ``incomplete`` and every
watcher told; tool calls waiting past their expiry are timed out and their runs woken
(``runs.approvals``); with ``housekeeping`` (every few seconds), queued runs whose dispatch was
lost are dispatched again, waiting runs whose calls were decided but never woken are woken, and
active conversations idle past their expiry become ``expired``. A waiting run has no owner and no
heartbeat: it is never stale.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationStatus, Message, MessageStatus
from knowledge.tasks import sweep_stale_tasks
from runs import approvals, sessions, store
from runs.dispatch import dispatch_next_queued, dispatch_run
from runs.domain_events import ConversationEnded
from runs.eventlog import get_event_log
from runs.events import EventWriter, emit_reply_finished
from runs.models import ACTIVE_RUN_STATUSES, HOLDING_RUN_STATUSES, Run, RunStatus
from runs.store import db

logger = logging.getLogger(__name__)
SWEEP_SECONDS = 1.0


def _stale_cutoff() -> datetime:
    """Runs whose heartbeat is older than this have lost their owner. NEXUS_RUN_STALE_SECONDS is
    the promise that a dead owner's run is declared within that time of the death; the owner's last
    beat is at most that old when it dies, so leave room for a sweep period and the sweep itself
    (15 s: beats older than 13 s). Never less than two heartbeats, so a live owner is never swept."""
    seconds = max(
        2 * settings.NEXUS_RUN_HEARTBEAT_SECONDS, settings.NEXUS_RUN_STALE_SECONDS - 2 * SWEEP_SECONDS
    )
    return timezone.now() - timedelta(seconds=seconds)


def _stale_runs() -> list[Run]:
    return list(
        Run.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=_stale_cutoff()).select_related(
            "conversation", "agent"
        )
    )


def _mark_incomplete(run: Run) -> bool:
    cutoff = _stale_cutoff()
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).update(
            status=RunStatus.INCOMPLETE,
            finished_at=timezone.now(),
            error={"code": "internal", "message": "The process running this reply stopped."},
        )
        if updated and run.reply_message_id:
            Message.objects.filter(pk=run.reply_message_id, status=MessageStatus.STREAMING).update(
                status=MessageStatus.INCOMPLETE
            )
    return bool(updated)


def _lost_queued_runs() -> list[str]:
    """Queued runs whose dispatch message was lost (the channel layer is at-most-once)."""
    cutoff = timezone.now() - timedelta(seconds=max(10.0, settings.NEXUS_RUN_STALE_SECONDS))
    busy = Run.objects.filter(status__in=HOLDING_RUN_STATUSES).values("conversation_id")
    rows = (
        Run.objects.filter(status=RunStatus.QUEUED, created_at__lt=cutoff, cancel_requested=False)
        .exclude(conversation_id__in=busy)
        .order_by("conversation_id", "created_at")
        .values_list("pk", "conversation_id")
    )
    first_per_conversation: dict[Any, str] = {}
    for pk, conversation_id in rows:
        first_per_conversation.setdefault(conversation_id, str(pk))
    return list(first_per_conversation.values())


def _reply_content(message_id: uuid.UUID | None) -> str:
    if message_id is None:
        return ""
    return Message.objects.filter(pk=message_id).values_list("content", flat=True).first() or ""


async def sweep_stale_runs(*, housekeeping: bool = True) -> int:
    """Declare runs whose owner stopped heartbeating ``incomplete`` and tell every watcher; with
    ``housekeeping``, also re-dispatch lost queued runs and expire idle conversations."""
    count = 0
    for run in await db(_stale_runs)():
        if not await db(_mark_incomplete)(run):
            continue
        count += 1
        content = await db(_reply_content)(run.reply_message_id)
        writer = EventWriter(
            get_event_log(),
            str(run.conversation_id),
            owner_id=run.conversation.owner_id,
            floor=run.conversation.last_seq,
        )
        message_id = str(run.reply_message_id or "")
        agent_id = str(run.agent_id)
        emit_reply_finished(
            writer,
            run_id=str(run.pk),
            status=RunStatus.INCOMPLETE,
            usage=run.usage or {},
            agent_id=agent_id,
            agent_name=run.agent.name,
            message_id=message_id,
            content=content,
            message_status=MessageStatus.INCOMPLETE,
            metadata={"provider": run.agent.provider, "model": run.agent.model, "finish_reason": None},
        )
        await db(store.checkpoint_seq)(run.conversation_id, await writer.flush())
        if not await sessions.after_run(run_id=str(run.pk), conversation_id=str(run.conversation_id)):
            await dispatch_next_queued(run.conversation_id)
    # Calls that waited past their expiry are denied and their runs woken (every sweep: a timeout
    # is a promise to the person); waiting runs nobody woke, every few seconds.
    await approvals.expire_pending(stranded=housekeeping)
    if not housekeeping:
        return count
    try:  # knowledge ingest tasks whose process died, and their lost dispatches
        await sweep_stale_tasks()
    except Exception:
        logger.exception("ingest task sweep failed")
    for run_id in await db(_lost_queued_runs)():
        await dispatch_run(run_id)
    for conversation_id, owner_id, last_seq in await db(_expire_idle_conversations)():
        writer = EventWriter(get_event_log(), conversation_id, owner_id=owner_id, floor=last_seq)
        writer.emit(ConversationEnded.session_expired())
        await writer.flush()
    return count


def _expire_idle_conversations() -> list[tuple[str, int, int]]:
    """Active conversations idle past their expiry (and with no run in flight) become expired."""

    busy = Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).values("conversation_id")
    rows = list(
        Conversation.objects.filter(status=ConversationStatus.ACTIVE, expires_at__lt=timezone.now())
        .exclude(pk__in=busy)
        .values_list("pk", "owner_id", "last_seq")[:500]
    )
    expired = []
    for pk, owner_id, last_seq in rows:
        if Conversation.objects.filter(
            pk=pk, status=ConversationStatus.ACTIVE, expires_at__lt=timezone.now()
        ).update(status=ConversationStatus.EXPIRED):
            expired.append((str(pk), owner_id, last_seq))
    return expired
