"""Sending a person's message: store it with its run, announce it, start (or queue) the reply.

Faces (WebSocket consumers, the SSE and invoke views, the REST create view) call ``message_send``
and ``session_open``, never the engine directly. Database work is in the ``_`` functions (sync, one
transaction each); events are appended after the transaction commits.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent
from agents.preferences import agent_apply_preferences
from agents.selectors import agent_unavailability
from conversations.branches import hidden_recompute, message_get_in, message_tip, siblings_of
from conversations.models import (
    Conversation,
    ConversationStatus,
    DoubleTextPolicy,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    SessionType,
)
from conversations.selectors import conversation_get_for_user
from conversations.services import (
    conversation_context_validate,
    conversation_idle_expiry,
    conversation_revive,
)
from core.auth import User
from core.errors import AgentUnavailable, Conflict, ValidationFailed
from runs.attachments import attachments_metadata, attachments_resolve
from runs.context import message_admit
from runs.dispatch import Claimed, Handoff, dispatch_run
from runs.domain_events import Branched, UserMessage
from runs.early_start import EarlyStart
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.history import chat_history
from runs.manager import get_run_manager
from runs.models import ACTIVE_RUN_STATUSES, Run, RunStatus
from runs.quotas import active_runs_admit, content_admit, run_rate_admit
from runs.selectors import conversation_for_send
from runs.stopping import signal_stop
from runs.store import db
from runs.turns import turns_taken


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
    claimed: Claimed | None = None  # a run this process already owns (the inline fast path)
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
    *, user: User, conversation_id: uuid.UUID | str, client_message_id: str | None, **send: Any
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


def _already_sent(
    *, user: User, conversation_id: uuid.UUID | str, client_message_id: str | None
) -> _Prepared:
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
    user: User,
    conversation_id: uuid.UUID | str,
    content: str,
    client_message_id: str | None,
    agent_id: str | None,
    context: Any,
    owner: str | None,
    launch: Callable[[Claimed], None] | None,
    edit_of: uuid.UUID | str | None = None,
    client_tools: list[dict[str, Any]] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> _Prepared:
    with transaction.atomic():
        # The conversation locked (serialises sends to one conversation; SQLite's IMMEDIATE
        # transactions already do) with whether a run is active, and its participants: every query
        # here is on the path to the provider's request.
        conversation, participants = conversation_for_send(user=user, conversation_id=conversation_id)
        conversation_revive(conversation)  # a new message revives an expired conversation
        edited = None
        if edit_of is not None:
            edited = _edit_target(conversation, edit_of)
        agent = _choose_agent(conversation, agent_id, participants)
        unavailable = agent_unavailability(agent=agent)
        if unavailable is not None:
            raise AgentUnavailable(unavailable.message, retry_after=unavailable.retry_after)
        active = (
            list(
                Run.objects.filter(conversation=conversation, status__in=ACTIVE_RUN_STATUSES)
                .order_by("created_at")
                .only("pk")
            )
            if conversation.has_active_run  # type: ignore[attr-defined]  # a column of the raw query
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
        elif active and edited is not None:
            raise Conflict("A reply is still being generated; wait for it or stop it before editing.")
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
                # an edit is a sibling of the message it edits; a message follows the active path
                parent_id=edited.parent_id if edited else message_tip(conversation_id=conversation.pk),
                role=MessageRole.USER,
                type=MessageType.MESSAGE,
                status=MessageStatus.COMPLETE,
                content=content,
                client_message_id=client_message_id or None,
                # client_tools: tools the client offers for the reply to this message (AG-UI's
                # frontend tools), run as the agent's client tools are (runs.execution)
                # attachments: the files it carries and their text (runs.attachments)
                metadata={
                    "user_id": user.pk,
                    **({"client_tools": client_tools} if client_tools else {}),
                    **(extra_metadata or {}),
                },
            )
        except IntegrityError:
            raise _AlreadySent from None
        if edited is not None:  # the edited message and what followed it step off the active path
            siblings_of(edited).exclude(pk=message.pk).update(selected=False)
            hidden_recompute(conversation_id=conversation.pk)
        if create_run:
            active_runs_admit(owner_id=conversation.owner_id)
        run = None
        claimed = None
        if fast:
            assert owner and launch is not None  # as fast says
            now = timezone.now()
            # the session's preferences the agent allows (as runs.dispatch applies them), on a copy
            agent = agent_apply_preferences(copy.copy(agent), conversation.settings or {})
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
            # until message_send tells it the send committed (its EarlyStart).
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


def _edit_target(conversation: Conversation, message_id: uuid.UUID | str) -> Message:
    """The person's message an edit replaces (a sibling is stored beside it)."""
    if conversation.session_type != SessionType.HUMAN_AGENT:
        raise ValidationFailed(
            "Messages are edited in conversations with one agent only.",
            details={"message_id": ["Not in an agent-to-agent session."]},
        )
    target = message_get_in(conversation=conversation, message_id=message_id)
    if target.role != MessageRole.USER or target.type != MessageType.MESSAGE:
        raise ValidationFailed(
            "Only your own messages can be edited.", details={"message_id": ["Not a user message."]}
        )
    if target.hidden:
        raise ValidationFailed(
            "That message is not on the active branch.", details={"message_id": ["Choose its branch first."]}
        )
    return target


def _set_message_seq(message_id: uuid.UUID | str, conversation_id: uuid.UUID | str, seq: int) -> None:
    Message.objects.filter(pk=message_id).update(seq=seq)
    Conversation.objects.filter(pk=conversation_id, last_seq__lt=seq).update(last_seq=seq)


async def message_send(
    *,
    user: User,
    conversation_id: uuid.UUID | str,
    content: str,
    client_message_id: str | None = None,
    agent_id: str | None = None,
    context: Any = None,
    edit_of: uuid.UUID | str | None = None,
    client_tools: list[dict[str, Any]] | None = None,
    attachments: list[Any] | None = None,
    attachment_names: list[Any] | None = None,
) -> SendResult:
    """Store a person's message, announce it, and start (or queue) the reply. Idempotent by
    ``client_message_id``: the same id twice gives one message and one run.

    ``edit_of`` (edit and resend): the message is stored as a sibling of that earlier message of
    the person's, which steps off the active path with everything after it (``conversations.branches``);
    refused (``conflict``) while a reply is being generated.

    ``attachments`` (stored file ids) and ``attachment_names`` (seed 002's object names): files
    of the sender's carried by the message; their text is read now, before the transaction, and
    stored with it (``runs.attachments``).

    Every path that starts a run goes through here, and meets the quotas (``runs.quotas``):
    content length, runs per minute, active runs per owner, context size."""
    if not isinstance(content, str) or not content.strip():
        raise ValidationFailed("The message is empty.", details={"content": ["Must not be empty."]})
    content_admit(content)
    extra_metadata: dict[str, Any] | None = None
    if attachments or attachment_names:
        files = await db(attachments_resolve)(user=user, file_ids=attachments, object_names=attachment_names)
        # reading files (a PDF) is not database work: off the database thread
        extra_metadata = await sync_to_async(attachments_metadata, thread_sensitive=False)(files)
    await run_rate_admit(user=user)

    manager = None
    launch = None
    early: EarlyStart | None = None
    if settings.NEXUS_RUN_MODE == "inline":
        manager = get_run_manager()
        await manager.ensure_started()
        loop = asyncio.get_running_loop()
        early = EarlyStart()

        def launch(claimed: Claimed) -> None:  # in the database thread, before the send commits
            claimed.early = early
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
            edit_of=edit_of,
            client_tools=client_tools,
            extra_metadata=extra_metadata,
        )
        if prepared.message is None:
            return prepared.result
        conversation = prepared.conversation
        writer = EventWriter(
            get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
        )
        if edit_of is not None:
            writer.emit(Branched(action="edit", message_id=str(edit_of), run_id=prepared.result.run_id))
        seq = await writer.emit_now(
            UserMessage(
                message_id=prepared.result.message_id,
                content=content,
                client_message_id=client_message_id,
                user_id=user.pk,
                parent_id=str(prepared.message.parent_id) if prepared.message.parent_id else None,
            )
        )
        if prepared.claimed is not None:
            # Committed and announced: the run launched from the transaction may now log its events
            # (after this one) and write; the message's seq is stored with the reply's row. Nothing
            # is awaited from here on, so the sender's `ack` goes out before the run's first event.
            prepared.claimed.trigger_seq = (prepared.result.message_id, seq)
            assert early is not None  # a run is launched early only inline, with its EarlyStart
            early.confirm()
            return prepared.result
    finally:
        if early is not None:
            early.fail()  # the send failed (no-op once confirmed): a run launched early is abandoned
    if prepared.result.run_id and not prepared.interrupt:
        # Dispatched first (time to first token): the claim stores the same seq if it gets there
        # before this process does.
        await dispatch_run(
            prepared.result.run_id,
            Handoff(
                trigger_seq=(prepared.result.message_id, seq), touch=prepared.touch, start=prepared.starts_now
            ),
        )
        await db(_set_message_seq)(prepared.result.message_id, conversation.pk, seq)
        return prepared.result
    await db(_set_message_seq)(prepared.result.message_id, conversation.pk, seq)
    for run in prepared.interrupt:
        await signal_stop(run)
    if prepared.result.run_id:
        await dispatch_run(prepared.result.run_id)
    return prepared.result


def session_open(*, user: User, conversation: Conversation) -> None:
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
