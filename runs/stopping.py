"""Stopping runs: a person's stop, and the deletion of a conversation with its replies in flight.

A running run is stopped by its owner process (this one directly, another through its control
channel; the database flag is the fallback); a queued run, or one paused waiting for a decision,
is stopped here and announced.
"""

from __future__ import annotations

import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationStatus, Message, MessageStatus, SessionType
from conversations.selectors import (
    conversation_get_for_user,
)
from core.auth import User
from core.errors import NotFound, parse_uuid
from runs.approvals import pending_cancel
from runs.dispatch import dispatch_next_queued
from runs.domain_events import ConversationEnded, RunFinished
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.manager import get_run_manager
from runs.models import ACTIVE_RUN_STATUSES, Run, RunStatus
from runs.store import db

# --- stop ----------------------------------------------------------------------------------------


def _prepare_stop(
    *, user: User, conversation_id: uuid.UUID | str, run_id: str | None
) -> tuple[Conversation, list[Run], list[Run]]:
    with transaction.atomic():
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        active = Run.objects.select_for_update().filter(
            conversation=conversation, status__in=ACTIVE_RUN_STATUSES
        )
        if run_id:
            # a malformed id is an id that does not exist (it reached the query as a 500 before)
            active = active.filter(pk=parse_uuid(run_id, what="Active run"))
        runs = list(active.select_related("agent"))
        if run_id and not runs:
            raise NotFound("Active run not found.")
        # A queued run, or one paused waiting for a decision (runs.approvals), has no process to
        # tell: it is stopped here, with the reply a paused run had begun.
        queued = [r for r in runs if r.status in (RunStatus.QUEUED, RunStatus.WAITING)]
        running = [r for r in runs if r.status == RunStatus.RUNNING]
        if queued:
            Run.objects.filter(pk__in=[r.pk for r in queued]).update(
                status=RunStatus.STOPPED, finished_at=timezone.now(), cancel_requested=True
            )
            replies = [r.reply_message_id for r in queued if r.reply_message_id]
            if replies:
                Message.objects.filter(pk__in=replies, status=MessageStatus.STREAMING).update(
                    status=MessageStatus.STOPPED, updated_at=timezone.now()
                )
            pending_cancel([r.pk for r in queued])
        if running:
            Run.objects.filter(pk__in=[r.pk for r in running]).update(cancel_requested=True)
        if (
            conversation.session_type == SessionType.AGENT_AGENT
            and conversation.status == ConversationStatus.ACTIVE
        ):
            conversation.status = ConversationStatus.STOPPED
            conversation.save(update_fields=["status", "updated_at"])
    return conversation, queued, running


async def signal_stop(run: Run) -> None:
    """Reach the process that owns a running run: directly if it is this one, else its channel."""
    manager = get_run_manager()
    if manager.stop_local(str(run.pk)):
        return
    _, _, channel = (run.owner or "").partition("|")
    if channel:
        try:
            layer = get_channel_layer()
            assert layer is not None  # settings.CHANNEL_LAYERS always has a default
            await layer.send(channel, {"type": "run.stop", "run_id": str(run.pk)})
        except Exception:  # the database flag is the fallback the owner checks every second
            pass


def _emit_stopped(writer: EventWriter, run: Run, *, message_id: str | None = None) -> None:
    """``run_finished {status: stopped}`` for a run that ends without its owner saying so (a queued
    run stopped, or the runs of a deleted conversation)."""
    writer.emit(
        RunFinished(
            run_id=str(run.pk),
            status=RunStatus.STOPPED,
            usage={},
            agent_id=str(run.agent_id),
            message_id=message_id,
        )
    )


async def run_stop(*, user: User, conversation_id: uuid.UUID | str, run_id: str | None = None) -> list[str]:
    """Stop the conversation's active runs (or one). Returns the ids of the runs told to stop."""
    conversation, queued, running = await db(_prepare_stop)(
        user=user, conversation_id=conversation_id, run_id=run_id
    )
    for run in running:
        await signal_stop(run)
    if queued or conversation.session_type == SessionType.AGENT_AGENT:
        writer = EventWriter(
            get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
        )
        for run in queued:
            _emit_stopped(writer, run, message_id=str(run.reply_message_id) if run.reply_message_id else None)
        if (
            conversation.session_type == SessionType.AGENT_AGENT
            and conversation.status == ConversationStatus.STOPPED
        ):
            writer.emit(ConversationEnded.session_stopped())
        await writer.flush()
    if any(r.status == RunStatus.WAITING for r in queued):  # it held the conversation: the next may go
        await dispatch_next_queued(conversation.pk)
    return [str(r.pk) for r in [*running, *queued]]


# --- deleting a conversation ---------------------------------------------------------------------


def _delete_conversation(*, user: User, conversation_id: uuid.UUID | str) -> tuple[Conversation, list[Run]]:
    """Delete the conversation (which ``user`` may access; None: anyone, the admin) with its
    messages and runs, in one transaction; the runs that were still active, to stop and announce.

    A run that finishes first is not among them (its own frames went out); one that finishes after
    finds its row gone and ends quietly, without frames (``runs.execution``): each run ends once."""
    with transaction.atomic():
        if user is None:
            conversation = Conversation.objects.filter(
                pk=parse_uuid(conversation_id, what="Conversation")
            ).first()
            if conversation is None:
                raise NotFound("Conversation not found.")
        else:
            conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        active = list(
            Run.objects.select_for_update()
            .filter(conversation=conversation, status__in=ACTIVE_RUN_STATUSES)
            .order_by("created_at")
        )
        pk = conversation.pk
        conversation.delete()
        conversation.pk = pk  # the caller announces the deletion under its id
    return conversation, active


def conversation_delete_with_runs(*, user: User, conversation_id: uuid.UUID | str) -> list[str]:
    """Delete a conversation and stop its replies in flight (the REST ``DELETE`` and the admin;
    sync callers: the database work runs in the caller's thread and transaction).

    The rows go first, in one transaction; then each running run's owner is told to stop (this
    process at once, another through its control channel; an owner that misses the message finds
    the run's row gone within a second, ``RunManager._heartbeat_loop``), so no provider is asked
    on for a reply nobody can read. Watchers get ``run_finished`` ``{status: "stopped"}`` for each
    run that was active, then ``system`` ``{code: "conversation_deleted"}``, after which their
    socket closes 4001 (docs/protocol.md). Returns the ids of the runs stopped."""
    conversation, active = _delete_conversation(user=user, conversation_id=conversation_id)
    # Once the deletion is committed (at once, unless the caller holds a transaction: the admin's
    # delete view does): a rolled-back deletion stops nothing and tells nobody.
    transaction.on_commit(lambda: async_to_sync(_announce_deleted)(conversation, active))
    return [str(r.pk) for r in active]


async def _announce_deleted(conversation: Conversation, active: list[Run]) -> None:
    for run in active:
        if run.status == RunStatus.RUNNING:
            await signal_stop(run)
    writer = EventWriter(
        get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    for run in active:
        _emit_stopped(writer, run, message_id=str(run.reply_message_id or ""))
    writer.emit(ConversationEnded.conversation_deleted())
    await writer.flush()
