"""The realtime services: send a message, stop a run, answer a client tool, describe a session.

WebSocket consumers, the SSE and invoke views and the admin call these, never the engine directly.
Database work is in the ``_`` functions (sync, one transaction each); events are appended after
the transaction commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent, AgentStatus
from agents.selectors import agent_get_for_user, agent_list
from conversations.models import (
    ACTIVE_RUN_STATUSES,
    Conversation,
    ConversationStatus,
    DoubleTextPolicy,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    Run,
    RunStatus,
    SessionType,
)
from conversations.selectors import (
    conversation_for_send,
    conversation_get_for_user,
    conversation_participants,
    message_list,
)
from conversations.services import (
    conversation_context_validate,
    conversation_create,
    conversation_idle_expiry,
)
from core.errors import AgentUnavailable, Conflict, NotFound, ValidationFailed, parse_uuid
from runs.context import message_admit
from runs.engine import Claimed, dispatch_run, get_run_manager
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.history import chat_history
from runs.quotas import active_runs_admit, content_admit, run_rate_admit
from runs.sessions import turns_taken
from runs.tools import store_tool_result, tool_result_key

db = sync_to_async


@dataclass(frozen=True, slots=True)
class SendResult:
    message_id: str
    run_id: str | None
    conversation_id: str
    client_message_id: str | None
    duplicate: bool = False


@dataclass(slots=True)
class _Prepared:
    result: SendResult
    conversation: Conversation
    message: Message | None
    interrupt: list[Run]
    claimed: Any = None  # runs.engine.Claimed: a run this process already owns (the inline fast path)
    touch: bool = False  # the activity mark is left to the run (written with its reply's row)
    starts_now: bool = False  # nothing else runs in the conversation: its run can start at once


def _choose_agent(conversation: Conversation, agent_id: str | None, agents: list[Agent]) -> Agent:
    if not agents:
        raise ValidationFailed(
            "This conversation has no agent.", details={"agent_id": ["No agent to answer."]}
        )
    if agent_id:
        for agent in agents:
            if str(agent.pk) == str(agent_id):
                return agent
        raise ValidationFailed(
            "That agent is not in this conversation.", details={"agent_id": ["Not a participant."]}
        )
    if conversation.session_type == SessionType.AGENT_AGENT:
        return agents[turns_taken(conversation.pk) % len(agents)]
    return agents[0]


def _prepare_send(
    *, user: Any, conversation_id: Any, client_message_id: str | None, **send: Any
) -> _Prepared:
    """Store the message and its run in one transaction (``_store_send``); a repeated
    ``client_message_id`` answers with the first send. ``owner`` (inline mode): when nothing else
    is running in a person-to-agent conversation, the run is created already claimed by this process
    and the provider's input is read in the same trip, so nothing but this one transaction stands
    between the message and the provider's request (time to first token)."""
    try:
        return _store_send(
            user=user, conversation_id=conversation_id, client_message_id=client_message_id, **send
        )
    except _AlreadySent:
        # The same client_message_id again: the transaction rolled back; answer with the first.
        return _already_sent(user=user, conversation_id=conversation_id, client_message_id=client_message_id)


class _AlreadySent(Exception):
    pass


def _already_sent(*, user: Any, conversation_id: Any, client_message_id: str | None) -> _Prepared:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    existing = Message.objects.filter(conversation=conversation, client_message_id=client_message_id).first()
    if existing is None:  # the other send rolled back meanwhile
        raise Conflict("A message with this client_message_id is being sent; send it again.")
    run = existing.triggered_runs.order_by("created_at").first()
    return _Prepared(
        SendResult(
            str(existing.pk), str(run.pk) if run else None, str(conversation.pk), client_message_id, True
        ),
        conversation,
        None,
        [],
    )


def _store_send(
    *,
    user: Any,
    conversation_id: Any,
    content: str,
    client_message_id: str | None,
    agent_id: str | None,
    context: Any,
    owner: str | None,
    launch: Callable[[Any], None] | None,
) -> _Prepared:
    with transaction.atomic():
        # The conversation locked (serialises sends to one conversation; SQLite's IMMEDIATE
        # transactions already do) with whether a run is active, and its participants: every query
        # here is on the path to the provider's request.
        conversation, participants = conversation_for_send(user=user, conversation_id=conversation_id)
        if conversation.status == ConversationStatus.EXPIRED:
            raise Conflict("This conversation has expired.")
        agent = _choose_agent(conversation, agent_id, participants)
        if agent.status in (AgentStatus.PAUSED, AgentStatus.ERROR):
            raise AgentUnavailable(f"{agent.name} is {agent.status}.")
        if (
            agent.status == AgentStatus.COOLDOWN
            and agent.cooldown_until
            and agent.cooldown_until > timezone.now()
        ):
            raise AgentUnavailable(
                f"{agent.name} is cooling down.",
                retry_after=(agent.cooldown_until - timezone.now()).total_seconds(),
            )
        active = (
            list(
                Run.objects.filter(conversation=conversation, status__in=ACTIVE_RUN_STATUSES)
                .order_by("created_at")
                .only("pk")
            )
            if conversation.has_active_run
            else []
        )
        interrupt: list[Run] = []
        create_run = True
        status_before = conversation.status
        if conversation.session_type == SessionType.AGENT_AGENT:
            # A person interjecting: the next turn sees it; a stopped or finished session resumes.
            create_run = not active
            if conversation.status != ConversationStatus.ACTIVE:
                conversation.status = ConversationStatus.ACTIVE
        elif active:
            policy = conversation.double_text_policy
            if policy == DoubleTextPolicy.REJECT:
                raise Conflict("A reply is still being generated; wait for it or stop it.")
            if policy == DoubleTextPolicy.INTERRUPT:
                interrupt = active
        changed = conversation.status != status_before
        if isinstance(context, dict) and context:
            conversation.context = conversation_context_validate({**(conversation.context or {}), **context})
            changed = True
        # A run that starts at once (nothing else running) leaves the activity mark (updated_at,
        # the idle expiry) to the reply's row, written once the provider answers: one statement
        # less before it is asked. Inline, the run is created already claimed (the fast path).
        starts_now = bool(create_run and not active and conversation.session_type == SessionType.HUMAN_AGENT)
        fast = bool(starts_now and owner and launch)
        touch = starts_now and not changed
        if not touch:
            if conversation.status == ConversationStatus.ACTIVE:  # activity pushes the idle expiry on
                conversation.expires_at = conversation_idle_expiry()
            conversation.save(update_fields=["status", "context", "updated_at", "expires_at"])
        message_admit(agent=agent, conversation=conversation, speakers=participants, content=content)
        try:  # no savepoint: a repeated client_message_id rolls the whole transaction back
            message = Message.objects.create(
                conversation=conversation,
                role=MessageRole.USER,
                type=MessageType.MESSAGE,
                status=MessageStatus.COMPLETE,
                content=content,
                client_message_id=client_message_id or None,
                metadata={"user_id": user.pk},
            )
        except IntegrityError:
            raise _AlreadySent from None
        if create_run:
            active_runs_admit(owner_id=conversation.owner_id)
        run = None
        claimed = None
        if fast:
            now = timezone.now()
            run = Run(
                conversation=conversation,
                agent=agent,
                trigger_message=message,
                status=RunStatus.RUNNING,
                owner=owner,
                started_at=now,
                heartbeat_at=now,
            )
            history = chat_history(
                conversation=conversation,
                agent=agent,
                exclude_message_id=message.pk,
                then=message,
                speakers=participants,
            )
            claimed = Claimed(run=run, agent=agent, conversation=conversation, history=history, touch=touch)
            # The provider is asked now, from the event loop, while this transaction writes the
            # run and commits (time to first token). The run holds its events and writes nothing
            # until message_send tells it the send committed (Claimed.committed).
            launch(claimed)
            run.save(force_insert=True)
        elif create_run:
            run = Run.objects.create(conversation=conversation, agent=agent, trigger_message=message)
        if interrupt:
            Run.objects.filter(pk__in=[r.pk for r in interrupt]).update(cancel_requested=True)
    return _Prepared(
        SendResult(str(message.pk), str(run.pk) if run else None, str(conversation.pk), client_message_id),
        conversation,
        message,
        interrupt,
        claimed,
        touch,
        starts_now,
    )


def _set_message_seq(message_id: Any, conversation_id: Any, seq: int) -> None:
    Message.objects.filter(pk=message_id).update(seq=seq)
    Conversation.objects.filter(pk=conversation_id, last_seq__lt=seq).update(last_seq=seq)


async def message_send(
    *,
    user: Any,
    conversation_id: Any,
    content: str,
    client_message_id: str | None = None,
    agent_id: str | None = None,
    context: Any = None,
) -> SendResult:
    """Store a person's message, announce it, and start (or queue) the reply. Idempotent by
    ``client_message_id``: the same id twice gives one message and one run.

    Every path that starts a run goes through here, and meets the quotas (``runs.quotas``):
    content length, runs per minute, active runs per owner, context size."""
    if not isinstance(content, str) or not content.strip():
        raise ValidationFailed("The message is empty.", details={"content": ["Must not be empty."]})
    content_admit(content)
    await run_rate_admit(user=user)

    manager = None
    launch = None
    committed: asyncio.Future[bool] | None = None
    if settings.NEXUS_RUN_MODE == "inline":
        manager = get_run_manager()
        await manager.ensure_started()
        loop = asyncio.get_running_loop()
        committed = loop.create_future()

        def launch(claimed: Any) -> None:  # in the database thread, before the send commits
            claimed.committed = committed
            loop.call_soon_threadsafe(manager.launch_claimed, claimed)

    try:
        prepared = await db(_prepare_send)(
            user=user,
            conversation_id=conversation_id,
            content=content,
            client_message_id=client_message_id,
            agent_id=agent_id,
            context=context,
            owner=manager.owner_name if manager else None,
            launch=launch,
        )
        if prepared.message is None:
            return prepared.result
        conversation = prepared.conversation
        writer = EventWriter(
            get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
        )
        seq = await writer.emit_now(
            "user_message",
            {
                "messageId": prepared.result.message_id,
                "content": content,
                "role": "user",
                "client_message_id": client_message_id,
                "user_id": user.pk,
            },
        )
        if prepared.claimed is not None:
            # Committed and announced: the run launched from the transaction may now log its events
            # (after this one) and write; the message's seq is stored with the reply's row. Nothing
            # is awaited from here on, so the sender's `ack` goes out before the run's first event.
            prepared.claimed.trigger_seq = (prepared.result.message_id, seq)
            committed.set_result(True)
            return prepared.result
    finally:
        if committed is not None and not committed.done():
            committed.set_result(False)  # the send failed: a run launched early is abandoned
    if prepared.result.run_id and not prepared.interrupt:
        # Dispatched first (time to first token): the claim stores the same seq if it gets there
        # before this process does.
        await dispatch_run(
            prepared.result.run_id,
            (prepared.result.message_id, seq),
            touch=prepared.touch,
            start=prepared.starts_now,
        )
        await db(_set_message_seq)(prepared.result.message_id, conversation.pk, seq)
        return prepared.result
    await db(_set_message_seq)(prepared.result.message_id, conversation.pk, seq)
    for run in prepared.interrupt:
        await _signal_stop(run)
    if prepared.result.run_id:
        await dispatch_run(prepared.result.run_id)
    return prepared.result


def session_open(*, user: Any, conversation: Conversation) -> None:
    """Sync callers (the REST create view): an ``agent_agent`` session created with
    ``settings.opening_message`` starts at once. The opening is posted as the creator's message (as
    if sent on the socket) and the first agent takes its turn; idempotent by its client_message_id,
    so a retried request cannot start it twice. Other conversations wait for their first message."""
    opening = (conversation.settings or {}).get("opening_message")
    if conversation.session_type != SessionType.AGENT_AGENT or not opening:
        return
    async_to_sync(message_send)(
        user=user,
        conversation_id=conversation.pk,
        content=opening,
        client_message_id=f"opening-{conversation.pk}",
    )


# --- stop ----------------------------------------------------------------------------------------


def _prepare_stop(
    *, user: Any, conversation_id: Any, run_id: str | None
) -> tuple[Conversation, list[Run], list[Run]]:
    with transaction.atomic():
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        runs = Run.objects.select_for_update().filter(
            conversation=conversation, status__in=ACTIVE_RUN_STATUSES
        )
        if run_id:
            # a malformed id is an id that does not exist (it reached the query as a 500 before)
            runs = runs.filter(pk=parse_uuid(run_id, what="Active run"))
        runs = list(runs.select_related("agent"))
        if run_id and not runs:
            raise NotFound("Active run not found.")
        queued = [r for r in runs if r.status == RunStatus.QUEUED]
        running = [r for r in runs if r.status == RunStatus.RUNNING]
        if queued:
            Run.objects.filter(pk__in=[r.pk for r in queued]).update(
                status=RunStatus.STOPPED, finished_at=timezone.now(), cancel_requested=True
            )
        if running:
            Run.objects.filter(pk__in=[r.pk for r in running]).update(cancel_requested=True)
        if (
            conversation.session_type == SessionType.AGENT_AGENT
            and conversation.status == ConversationStatus.ACTIVE
        ):
            conversation.status = ConversationStatus.STOPPED
            conversation.save(update_fields=["status", "updated_at"])
    return conversation, queued, running


async def _signal_stop(run: Run) -> None:
    """Reach the process that owns a running run: directly if it is this one, else its channel."""
    manager = get_run_manager()
    if manager.stop_local(str(run.pk)):
        return
    _, _, channel = (run.owner or "").partition("|")
    if channel:
        try:
            await get_channel_layer().send(channel, {"type": "run.stop", "run_id": str(run.pk)})
        except Exception:  # the database flag is the fallback the owner checks every second
            pass


def _emit_stopped(writer: EventWriter, run: Run, **extra: Any) -> None:
    """``run_finished {status: stopped}`` for a run that ends without its owner saying so (a queued
    run stopped, or the runs of a deleted conversation)."""
    writer.emit(
        "run_finished",
        {
            "run_id": str(run.pk),
            "status": RunStatus.STOPPED,
            "usage": {},
            "agent_id": str(run.agent_id),
            **extra,
        },
    )


async def run_stop(*, user: Any, conversation_id: Any, run_id: str | None = None) -> list[str]:
    """Stop the conversation's active runs (or one). Returns the ids of the runs told to stop."""
    conversation, queued, running = await db(_prepare_stop)(
        user=user, conversation_id=conversation_id, run_id=run_id
    )
    for run in running:
        await _signal_stop(run)
    if queued or conversation.session_type == SessionType.AGENT_AGENT:
        writer = EventWriter(
            get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
        )
        for run in queued:
            _emit_stopped(writer, run)
        if (
            conversation.session_type == SessionType.AGENT_AGENT
            and conversation.status == ConversationStatus.STOPPED
        ):
            writer.emit(
                "system",
                {"code": "session_stopped", "message": "The session was stopped.", "status": "stopped"},
            )
        await writer.flush()
    return [str(r.pk) for r in [*running, *queued]]


# --- deleting a conversation ---------------------------------------------------------------------


def _delete_conversation(*, user: Any, conversation_id: Any) -> tuple[Conversation, list[Run]]:
    """Delete the conversation (which ``user`` may access; None: anyone, the admin) with its
    messages and runs, in one transaction; the runs that were still active, to stop and announce.

    A run that finishes first is not among them (its own frames went out); one that finishes after
    finds its row gone and ends quietly, without frames (``runs.engine``): each run ends once."""
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


def conversation_delete_with_runs(*, user: Any, conversation_id: Any) -> list[str]:
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
            await _signal_stop(run)
    writer = EventWriter(
        get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    for run in active:
        _emit_stopped(writer, run, message_id=str(run.reply_message_id or ""))
    writer.emit(
        "system",
        {
            "code": "conversation_deleted",
            "message": "The conversation was deleted.",
            "status": "deleted",
        },
    )
    await writer.flush()


# --- client tools ----------------------------------------------------------------------------------


def _prepare_tool_result(
    *, user: Any, conversation_id: Any, tool_call_id: str, result: Any, is_error: bool
) -> tuple[str, str, dict[str, Any]]:
    """Store a client's answer to a client tool call of a run of this conversation, which ``user``
    may access; (the run's owner, the run's id, the outcome). The call is found in this
    conversation only: a call id is the provider's and may repeat in other conversations and runs,
    so it is never looked up on its own. Of several calls with this id here, the newest unanswered
    one gets the answer."""
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    calls = list(
        Message.objects.filter(
            conversation=conversation, type=MessageType.TOOL_CALL, metadata__toolCallId=tool_call_id
        ).order_by("-created_at", "-pk")[:20]
    )
    if not calls:
        raise NotFound("No tool call with that id in this conversation.")
    answered = set(
        Message.objects.filter(
            conversation=conversation,
            type=MessageType.TOOL_RESULT,
            client_message_id__in=[
                tool_result_key(c.metadata.get("run_id", ""), tool_call_id) for c in calls
            ],
        ).values_list("client_message_id", flat=True)
    )
    call = next(
        (c for c in calls if tool_result_key(c.metadata.get("run_id", ""), tool_call_id) not in answered),
        calls[0],
    )
    if call.metadata.get("execution") != "client":
        raise ValidationFailed(
            "That tool runs on the server.", details={"toolCallId": ["Not a client tool."]}
        )
    run_id = str(call.metadata.get("run_id") or "")
    owners = (
        list(Run.objects.filter(pk=run_id, conversation=conversation).values_list("owner", flat=True)[:1])
        if run_id
        else []
    )
    if not owners:  # a call stored by no run of this conversation: nothing waits for it
        raise NotFound("No tool call with that id in this conversation.")
    stored = store_tool_result(
        conversation_id=conversation.pk,
        run_id=run_id,
        tool_call_id=tool_call_id,
        tool=call.metadata.get("tool", ""),
        agent_id=call.metadata.get("agent_id", ""),
        result=result,
        is_error=is_error,
    )
    if stored is None:
        raise Conflict("This tool call already has a result.")
    return owners[0] or "", run_id, {"result": result, "is_error": is_error}


async def tool_result_submit(
    *, user: Any, conversation_id: Any, tool_call_id: str, result: Any, is_error: bool
) -> None:
    """A client's answer to a client tool call. The first valid answer wins; later ones get Conflict.

    Only a user who may access the conversation answers, and only a call of a run of that
    conversation: the waiter is found by (run, call id), here or in the run's owning process."""
    owner, run_id, outcome = await db(_prepare_tool_result)(
        user=user,
        conversation_id=conversation_id,
        tool_call_id=tool_call_id,
        result=result,
        is_error=is_error,
    )
    if get_run_manager().resolve_tool(run_id, tool_call_id, outcome):
        return
    _, _, channel = owner.partition("|")
    if channel:
        try:
            await get_channel_layer().send(
                channel,
                {
                    "type": "run.tool_result",
                    "run_id": run_id,
                    "tool_call_id": tool_call_id,
                    "outcome": outcome,
                },
            )
        except Exception:  # the run also finds the stored result within a second
            pass


# --- session state and binding ------------------------------------------------------------------------


def message_as_dict(message: Message) -> dict[str, Any]:
    return {
        "id": str(message.pk),
        "seq": message.seq,
        "role": message.role,
        "type": message.type,
        "agent_id": str(message.agent_id) if message.agent_id else None,
        "content": message.content,
        "status": message.status,
        "metadata": message.metadata,
        "opinion": message.opinion,
        "client_message_id": message.client_message_id,
        "created_at": message.created_at.isoformat(),
    }


def agent_as_dict(agent: Agent) -> dict[str, Any]:
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "emoji": agent.emoji,
        "provider": agent.provider,
        "model": agent.model,
        "status": agent.status,
        "role": getattr(agent, "participant_role", None),
        "tools": [
            {"name": t.get("name"), "execution": t.get("execution", "server")} for t in agent.tools or []
        ],
    }


def _session_state(conversation: Conversation, last_seq: int, recent: int) -> dict[str, Any]:
    conversation.refresh_from_db()
    messages = message_list(conversation=conversation, limit=recent)
    active = list(
        Run.objects.filter(conversation=conversation, status__in=ACTIVE_RUN_STATUSES).order_by("created_at")
    )
    answered = set(
        Message.objects.filter(
            conversation=conversation, type=MessageType.TOOL_RESULT, client_message_id__isnull=False
        ).values_list("client_message_id", flat=True)
    )
    pending_tools = [
        {
            "toolCallId": m.metadata.get("toolCallId"),
            "tool": m.metadata.get("tool"),
            "parameters": m.metadata.get("parameters"),
            "execution": "client",
            "run_id": m.metadata.get("run_id"),
        }
        for m in Message.objects.filter(
            conversation=conversation, type=MessageType.TOOL_CALL, metadata__execution="client"
        ).order_by("created_at")
        if tool_result_key(m.metadata.get("run_id", ""), m.metadata.get("toolCallId", "")) not in answered
        and m.metadata.get("run_id") in {str(r.pk) for r in active}
    ]
    return {
        "conversation": {
            "id": str(conversation.pk),
            "title": conversation.title,
            "session_type": conversation.session_type,
            "status": conversation.status,
            "settings": conversation.settings,
            "context": conversation.context,
            "created_at": conversation.created_at.isoformat(),
        },
        "agents": [agent_as_dict(a) for a in conversation_participants(conversation=conversation)],
        "status": conversation.status,
        "last_seq": last_seq,
        "messages": [message_as_dict(m) for m in messages],
        "active_runs": [
            {"run_id": str(r.pk), "agent_id": str(r.agent_id), "status": r.status} for r in active
        ],
        "pending_tool_calls": pending_tools,
    }


async def engine_ensure_started() -> None:
    """Start this process's run manager (control channel, heartbeat, sweeper) if it is not yet.
    Every process that serves clients sweeps, so a run whose worker died is declared incomplete
    even where no run was ever executed (web processes in worker mode)."""
    await get_run_manager().ensure_started()


async def session_state(*, conversation: Conversation, recent: int = 50) -> dict[str, Any]:
    """The conversation as stored, with the log's current last seq: what a client resyncs to."""
    last_seq = await get_event_log().last_seq(str(conversation.pk))
    last_seq = max(last_seq, conversation.last_seq if last_seq == 0 else 0)
    return await db(_session_state)(conversation, last_seq, recent)


def _bind(*, user: Any, conversation_id: Any, agent_id: Any, context: Any) -> Conversation:
    if conversation_id:
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        if isinstance(context, dict) and context:
            conversation.context = conversation_context_validate({**(conversation.context or {}), **context})
            conversation.save(update_fields=["context", "updated_at"])
        return conversation
    if agent_id:
        agent = agent_get_for_user(user=user, agent_id=agent_id)
    else:
        agent = agent_list(user=user, filters={"status": AgentStatus.ACTIVE}).first()
        if agent is None:
            raise NotFound("No active agent is available.")
    return conversation_create(
        owner=user, participants=[(agent, "primary")], context=context if isinstance(context, dict) else None
    )


async def conversation_bind(
    *, user: Any, conversation_id: Any = None, agent_id: Any = None, context: Any = None
) -> Conversation:
    """``initialize``: the user's conversation, or a new one with the given (or first active) agent."""
    return await db(_bind)(user=user, conversation_id=conversation_id, agent_id=agent_id, context=context)
