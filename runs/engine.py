"""The run engine: the only code that calls a provider.

A run (one agent producing one reply) is an asyncio task owned by this process's ``RunManager``,
never by a socket. The manager also owns the process's control channel (stop requests and client
tool results reach the owning process through it), the heartbeat of its runs, and the sweeper that
marks runs whose owner died as ``incomplete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
import weakref
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from agents.models import Agent, AgentStatus
from agents.provider_config import generation_options_for
from conversations.models import (
    ACTIVE_RUN_STATUSES,
    Conversation,
    ConversationStatus,
    Message,
    MessageRole,
    MessageStatus,
    MessageType,
    Run,
    RunStatus,
    SessionType,
)
from conversations.services import conversation_idle_expiry
from core.tasks import process_task
from providers.base import ChatMessage, Finished, ProviderError, TextDelta, ToolCall, ToolSpec, UsageReport
from runs import tools as run_tools
from runs.context import fit_request
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.history import USABLE_STATUSES, chat_history

logger = logging.getLogger(__name__)
PROCESS_NAME = f"{socket.gethostname()}:{os.getpid()}"

db = sync_to_async  # ORM work runs in Django's sync thread (thread_sensitive=True)

PROVIDER_ERROR_CODES = {
    "rate_limited": "provider_rate_limited",
    "timeout": "provider_timeout",
    "unavailable": "provider_unavailable",
}
# Frames and the run's row carry the error's public message (nothing the upstream sent, no
# address); the full message, which may quote the upstream, goes to the log only.


# Seconds between the provider's first event being logged and the reply's row being stored.
REPLY_ROW_PAUSE = 0.01


class RunStopped(Exception):
    """Raised into a run's task by ``stop``: keep the partial reply as ``stopped``."""


@dataclass(slots=True)
class _Outcome:
    status: str = RunStatus.COMPLETED
    message_status: str = MessageStatus.COMPLETE
    finish_reason: str | None = None
    error: dict[str, Any] = field(default_factory=dict)


class RunManager:
    """Per process (and event loop): runs in flight, the control channel, heartbeat and sweeper."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping: set[str] = set()
        # Runs launched before the transaction that stores their row commits (the inline fast
        # path): a row not there yet is not a deleted one.
        self.uncommitted: set[str] = set()
        # Client tools waiting for their answer, by (run id, the provider's call id): call ids are
        # the provider's and may repeat across runs, users and conversations.
        self.tool_waiters: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self.control_channel: str = ""
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._start_lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            # A plain channel named for this process, not a process-local "x.y!z" one: channels_redis
            # lets one receiver at a time block on a process's local channels, and a blocked receive
            # on another prefix starves every consumer's channel in the process (and is starved).
            self.control_channel = f"nexus-owner.{uuid.uuid4().hex}"
            self._background = [
                process_task(self._control_loop(), name="runs-control"),
                process_task(self._heartbeat_loop(), name="runs-heartbeat"),
                process_task(self._sweeper_loop(), name="runs-sweeper"),
            ]
            self._started = True

    @property
    def owner_name(self) -> str:
        return f"{PROCESS_NAME}|{self.control_channel}"

    # -- launching and stopping ------------------------------------------------------------------

    async def launch(
        self, run_id: str, trigger_seq: Any = None, *, touch: bool = False, start: bool = False
    ) -> None:
        """Start executing a queued run in this process (returns at once). ``trigger_seq``:
        (message id, seq) of the message that started it, when its seq may not be stored yet;
        ``touch``, ``start``: see dispatch_run."""
        await self.ensure_started()
        run_id = str(run_id)
        if run_id in self.tasks:
            return
        task = process_task(
            execute_run(self, run_id, _trigger_seq(trigger_seq), touch=touch, start=start),
            name=f"run-{run_id}",
        )
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t, rid=run_id: self._forget(rid))

    def launch_claimed(self, claimed: Claimed) -> None:
        """Start executing a run this process already claimed (``runs.services._prepare_send``)."""
        run_id = str(claimed.run.pk)
        if claimed.committed is not None and not claimed.committed.done():
            self.uncommitted.add(run_id)
            claimed.committed.add_done_callback(lambda _f, rid=run_id: self.uncommitted.discard(rid))
        task = process_task(_execute(self, claimed), name=f"run-{run_id}")
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t, rid=run_id: self._forget(rid))

    def _forget(self, run_id: str) -> None:
        self.tasks.pop(run_id, None)
        self.stopping.discard(run_id)
        self.uncommitted.discard(run_id)

    def stop_local(self, run_id: str) -> bool:
        task = self.tasks.get(str(run_id))
        if task is None or task.done():
            return False
        self.stopping.add(str(run_id))
        task.cancel()
        return True

    def resolve_tool(self, run_id: str, tool_call_id: str, result: dict[str, Any]) -> bool:
        """Hand a client tool's answer to the call ``tool_call_id`` of the run ``run_id``, if it
        waits in this process. The caller has checked the answer belongs to that run's call."""
        future = self.tool_waiters.get((str(run_id), str(tool_call_id)))
        if future is None or future.done():
            return False
        future.set_result(result)
        return True

    # -- background loops -----------------------------------------------------------------------

    async def _control_loop(self) -> None:
        layer = get_channel_layer()
        backoff = 0.1
        while True:
            try:
                message = await layer.receive(self.control_channel)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer's backend restarting: keep listening
                logger.warning("control channel receive failed (%s)", exc.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            kind = message.get("type")
            if kind == "run.stop":
                self.stop_local(message.get("run_id", ""))
            elif kind == "run.tool_result":
                self.resolve_tool(
                    message.get("run_id", ""), message.get("tool_call_id", ""), message.get("outcome", {})
                )
            elif kind == "run.execute":
                await self.launch(message["run_id"], message.get("trigger_seq"))

    async def _heartbeat_loop(self) -> None:
        interval = settings.NEXUS_RUN_HEARTBEAT_SECONDS
        last_beat = 0.0
        while True:
            await asyncio.sleep(min(1.0, interval))
            ids = [run_id for run_id in self.tasks if run_id not in self.uncommitted]
            if not ids:
                continue
            try:
                now = time.monotonic()
                if now - last_beat >= interval:
                    last_beat = now
                    await db(_heartbeat)(ids)
                # Fallback for a lost stop message: the flag is in the database too; and a run
                # whose row is gone (its conversation, agent or itself deleted) stops as well.
                for run_id in await db(_stop_requested)(ids):
                    self.stop_local(run_id)
            except Exception:
                logger.exception("heartbeat failed")

    async def _sweeper_loop(self) -> None:
        # Orphaned runs are looked for every second (one indexed query); the rest every few seconds.
        last_housekeeping = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            housekeeping = now - last_housekeeping >= min(5.0, settings.NEXUS_RUN_STALE_SECONDS / 3)
            if housekeeping:
                last_housekeeping = now
            try:
                await sweep_stale_runs(housekeeping=housekeeping)
            except Exception:
                logger.exception("sweeper failed")

    async def close(self) -> None:
        for task in [*self.tasks.values(), *self._background]:
            task.cancel()
        for task in [*self.tasks.values(), *self._background]:
            with contextlib.suppress(BaseException):
                await task


_managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunManager] = weakref.WeakKeyDictionary()


def get_run_manager() -> RunManager:
    loop = asyncio.get_running_loop()
    manager = _managers.get(loop)
    if manager is None:
        manager = _managers[loop] = RunManager()
    return manager


# --- dispatch --------------------------------------------------------------------------------------


DISPATCH_ATTEMPTS = 4


async def dispatch_run(
    run_id: Any, trigger_seq: tuple[str, int] | None = None, *, touch: bool = False, start: bool = False
) -> None:
    """Hand a queued run to the executor: this process (inline) or the worker pool. ``touch``: the
    conversation's activity mark is the run's to write (with its reply's row); ``start``: the
    sender saw nothing else running, so the run may ask its provider while it is claimed."""
    if settings.NEXUS_RUN_MODE == "worker":
        message: dict[str, Any] = {"type": "run.execute", "run_id": str(run_id)}
        if trigger_seq is not None:
            message["trigger_seq"] = list(trigger_seq)
        if touch:
            message["touch"] = True
        if start:
            message["start"] = True
        # After a Redis restart the layer's pooled connections are dead and each fails once; a
        # few tries reach a fresh one. If Redis is really down the run stays queued and the
        # sweeper dispatches it again (_lost_queued_runs): the message is stored either way.
        for attempt in range(DISPATCH_ATTEMPTS):
            try:
                await get_channel_layer().send(settings.NEXUS_RUN_CHANNEL, message)
                return
            except Exception as exc:
                if attempt + 1 == DISPATCH_ATTEMPTS:
                    logger.warning(
                        "run %s not dispatched (%s); the sweeper will", run_id, exc.__class__.__name__
                    )
                else:
                    await asyncio.sleep(0.05 * (attempt + 1))
    else:
        await get_run_manager().launch(str(run_id), trigger_seq, touch=touch, start=start)


async def dispatch_next_queued(conversation_id: Any) -> None:
    run_id = await db(_next_queued_run_id)(conversation_id)
    if run_id is not None:
        await dispatch_run(run_id)


# --- database steps (sync, run in Django's thread) ---------------------------------------------------


def _heartbeat(run_ids: list[str]) -> None:
    Run.objects.filter(pk__in=run_ids, status=RunStatus.RUNNING).update(heartbeat_at=timezone.now())


def _stop_requested(run_ids: list[str]) -> list[str]:
    """Of these runs, those told to stop (the flag) and those whose row was deleted."""
    flags = dict(Run.objects.filter(pk__in=run_ids).values_list("pk", "cancel_requested"))
    present = {str(pk): flag for pk, flag in flags.items()}
    return [run_id for run_id in run_ids if present.get(str(run_id), True)]


def _vanished(run_id: Any, conversation_id: Any) -> tuple[bool, bool]:
    """(the run's row is gone, its conversation's too): deleted while the run replied."""
    if Run.objects.filter(pk=run_id).exists():
        return False, False
    return True, not Conversation.objects.filter(pk=conversation_id).exists()


def _stop_orphan_reply(message_id: Any, content: str) -> None:
    """A reply whose run was deleted under it (its conversation stays): keep it as stopped."""
    Message.objects.filter(pk=message_id, status=MessageStatus.STREAMING).update(
        content=content, status=MessageStatus.STOPPED, updated_at=timezone.now()
    )


def _next_queued_run_id(conversation_id: Any) -> str | None:
    if Run.objects.filter(conversation_id=conversation_id, status=RunStatus.RUNNING).exists():
        return None
    run = (
        Run.objects.filter(conversation_id=conversation_id, status=RunStatus.QUEUED)
        .order_by("created_at")
        .first()
    )
    return str(run.pk) if run else None


@dataclass(slots=True)
class Claimed:
    run: Run
    agent: Agent
    conversation: Conversation
    refusal: str | None = None
    history: list[ChatMessage] | None = None
    # The inline fast path: the triggering message's seq, stored with the reply's row (not before
    # the provider is asked).
    trigger_seq: tuple[str, int] | None = None
    touch: bool = False  # the conversation's activity mark is still to write (with the reply's row)
    # A run launched before its start is committed (inline: the send's transaction; on workers:
    # the claim): True once it is (inline: and its user_message is logged, trigger_seq set), False
    # if it failed. Until then the run's events are held and it writes nothing.
    committed: asyncio.Future[bool] | None = None


def _take(run_id: str, owner: str, *, touch: bool = False) -> bool:
    """Queued -> running, at most once, one running run per conversation: the claim itself."""
    now = timezone.now()
    try:  # one statement, atomic by itself: no BEGIN/COMMIT round trips before the first token
        taken = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED, cancel_requested=False).update(
            status=RunStatus.RUNNING, owner=owner, started_at=now, heartbeat_at=now
        )
    except IntegrityError:
        taken = 0  # another run of the conversation is running; it starts this one when done
    if not taken and touch:  # the send left its activity mark to this run, which is not starting
        _mark_activity(Conversation.objects.filter(runs__pk=run_id))
    return bool(taken)


def _claim(
    run_id: str, owner: str, trigger_seq: tuple[str, int] | None = None, *, touch: bool = False
) -> Claimed | None:
    """Take a queued run, then read what it needs."""
    if not _take(run_id, owner, touch=touch):
        return None
    run = _run_with_input(run_id)
    refusal = _refusal(run.agent)
    if refusal is None:
        from runs import sessions

        if sessions.turn_refusal(run) is not None:
            return None  # a session past its limits takes no more turns, whoever dispatched this one
    return _claimed(run, trigger_seq, touch=touch, refusal=refusal)


def _read_startable(run_id: str, trigger_seq: tuple[str, int] | None, *, touch: bool) -> Claimed | None:
    """What a run its sender saw start at once needs, read before it is taken (``_take`` follows
    while the provider is asked); None if it cannot start that way (``_claim`` then)."""
    run = _run_with_input(run_id)
    if (
        run is None
        or run.status != RunStatus.QUEUED
        or run.cancel_requested
        or run.conversation.session_type != SessionType.HUMAN_AGENT
        or _refusal(run.agent) is not None
    ):
        return None
    return _claimed(run, trigger_seq, touch=touch, refusal=None)


def _run_with_input(run_id: str) -> Run | None:
    """The run with what its provider's input is made of: agent, conversation, triggering message."""
    return Run.objects.select_related("agent", "conversation", "trigger_message").filter(pk=run_id).first()


def _refusal(agent: Agent) -> str | None:
    now = timezone.now()
    if agent.status == AgentStatus.PAUSED or agent.status == AgentStatus.ERROR:
        return f"{agent.name} is {agent.status}."
    if agent.status == AgentStatus.COOLDOWN and agent.cooldown_until and agent.cooldown_until > now:
        return f"{agent.name} is cooling down until {agent.cooldown_until.isoformat()}."
    return None


def _claimed(run: Run, trigger_seq: tuple[str, int] | None, *, touch: bool, refusal: str | None) -> Claimed:
    # The provider's input, read in the same trip to the database: nothing else stands between
    # the claim and the provider's request (time to first token). The sender may still be storing
    # the triggering message's seq: the history places it by the seq it was dispatched with, and
    # the reply's row stores it if the sender has not (no write here).
    history = None
    if not refusal:
        trigger = run.trigger_message
        if trigger is not None and trigger.status not in USABLE_STATUSES:
            trigger = None
        if trigger is not None and trigger.seq is None and trigger_seq and str(trigger.pk) == trigger_seq[0]:
            trigger.seq = trigger_seq[1]
        history = chat_history(conversation=run.conversation, agent=run.agent, then=trigger)
    return Claimed(
        run=run,
        agent=run.agent,
        conversation=run.conversation,
        refusal=refusal,
        history=history,
        trigger_seq=trigger_seq,
        touch=touch,
    )


def _new_reply(run: Run) -> Message:
    """The reply's row, not saved yet: its id goes out in run_started at once (see _store_reply)."""
    return Message(
        id=uuid.uuid4(),
        conversation_id=run.conversation_id,
        agent=run.agent,
        role=MessageRole.AGENT,
        type=MessageType.MESSAGE,
        status=MessageStatus.STREAMING,
        metadata={"provider": run.agent.provider, "model": run.agent.model, "run_id": str(run.pk)},
    )


def _store_reply(
    message: Message,
    run_id: Any,
    seq: int,
    *,
    trigger_seq: tuple[str, int] | None = None,
    touch: bool = False,
) -> None:
    with transaction.atomic():
        if trigger_seq is not None:
            Message.objects.filter(pk=trigger_seq[0], seq__isnull=True).update(seq=trigger_seq[1])
        if touch:
            _mark_activity(Conversation.objects.filter(pk=message.conversation_id))
        message.seq = seq
        message.save(force_insert=True)
        Run.objects.filter(pk=run_id).update(reply_message=message)
        Conversation.objects.filter(pk=message.conversation_id, last_seq__lt=seq).update(last_seq=seq)


def _mark_activity(conversations: Any) -> None:
    """A person's message was sent: ``updated_at``, and the idle expiry pushed on (active ones)."""
    conversations.filter(status=ConversationStatus.ACTIVE).update(
        updated_at=timezone.now(), expires_at=conversation_idle_expiry()
    )


def _checkpoint(message_id: Any, content: str, conversation_id: Any, last_seq: int) -> None:
    Message.objects.filter(pk=message_id, status=MessageStatus.STREAMING).update(content=content)
    Conversation.objects.filter(pk=conversation_id, last_seq__lt=last_seq).update(last_seq=last_seq)


def _history(conversation: Conversation, agent: Agent, reply_id: Any) -> list[ChatMessage]:
    return chat_history(conversation=conversation, agent=agent, exclude_message_id=reply_id)


def _store_tool_message(
    *, run: Run, kind: str, content: str, metadata: dict[str, Any], seq: int | None = None
) -> Message:
    return Message.objects.create(
        conversation_id=run.conversation_id,
        agent=run.agent if kind == MessageType.TOOL_CALL else None,
        role=MessageRole.AGENT if kind == MessageType.TOOL_CALL else MessageRole.TOOL,
        type=kind,
        status=MessageStatus.COMPLETE,
        content=content,
        metadata=metadata,
        seq=seq,
    )


def _finish(
    run_id: Any,
    message_id: Any | None,
    *,
    content: str,
    outcome: _Outcome,
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


# --- executing one run ---------------------------------------------------------------------------


def _trigger_seq(value: Any) -> tuple[str, int] | None:
    """A (message id, seq) pair from a dispatch message, or None when absent or malformed."""
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0]), value[1]
    return None


async def execute_run(
    manager: RunManager,
    run_id: str,
    trigger_seq: tuple[str, int] | None = None,
    *,
    touch: bool = False,
    start: bool = False,
) -> None:
    """Claim a queued run and execute it. ``start``: its sender saw it start at once (nothing else
    running in its conversation), so the provider is asked while the claim commits; the run holds
    its events and writes nothing until it has, and vanishes if another took it or it was stopped."""
    if start:
        ready = await db(_read_startable)(run_id, trigger_seq, touch=touch)
        if ready is not None:
            committed = ready.committed = asyncio.get_running_loop().create_future()
            taking = asyncio.ensure_future(db(_take)(run_id, manager.owner_name, touch=touch))

            def taken(task: asyncio.Future[bool]) -> None:
                if not task.cancelled() and task.exception() is not None:
                    logger.error("run %s could not be claimed", run_id, exc_info=task.exception())
                committed.set_result(not task.cancelled() and task.exception() is None and task.result())

            taking.add_done_callback(taken)
            await _execute(manager, ready)
            return
    claimed = await db(_claim)(run_id, manager.owner_name, trigger_seq, touch=touch)
    if claimed is not None:
        await _execute(manager, claimed)


async def _execute(manager: RunManager, claimed: Claimed) -> None:
    execution = _Execution(manager, claimed)
    try:
        await execution.run()
    finally:
        if not execution.abandoned:
            with contextlib.suppress(Exception):
                await asyncio.shield(_after_run(claimed))


async def _after_run(claimed: Claimed) -> None:
    from runs import sessions

    if not await sessions.after_run(run_id=str(claimed.run.pk), conversation_id=str(claimed.conversation.pk)):
        await dispatch_next_queued(claimed.conversation.pk)


class _Execution:
    def __init__(self, manager: RunManager, claimed: Claimed) -> None:
        self.manager = manager
        self.run_row = claimed.run
        self.agent = claimed.agent
        self.conversation = claimed.conversation
        self.refusal = claimed.refusal
        self.history = claimed.history
        self.touch = claimed.touch
        self.run_id = str(claimed.run.pk)
        self.writer = EventWriter(
            get_event_log(),
            str(self.conversation.pk),
            owner_id=self.conversation.owner_id,
            floor=self.conversation.last_seq,
        )
        self.claimed = claimed
        self.committed = claimed.committed
        self.abandoned = False  # the send that launched it failed: it never existed
        self.task: asyncio.Task[Any] | None = None
        if self.committed is not None:
            self.writer.hold()
            self.committed.add_done_callback(self._on_committed)
        self.reply: Message | None = None
        self.text: list[str] = []
        self.text_chars = 0
        self.usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        self.started = time.monotonic()
        self.first_token_at: float | None = None
        self._last_checkpoint = time.monotonic()
        self._checkpointing: asyncio.Task[None] | None = None
        self._storing_reply: asyncio.Task[None] | None = None
        self._run_started: asyncio.Future[int] | None = None

    @property
    def message_id(self) -> str:
        return str(self.reply.pk) if self.reply else ""

    def _on_committed(self, future: asyncio.Future[bool]) -> None:
        if not future.result():
            self.abandoned = True
            if self.task is not None:
                self.task.cancel()
            return
        self.writer.release()

    async def _start_committed(self) -> bool:
        """Before the run's first write: is its start committed? (True when it was not launched
        early.)"""
        if self.committed is None:
            return True
        return await asyncio.shield(self.committed)

    async def run(self) -> None:
        self.task = asyncio.current_task()
        if self.abandoned:
            return
        outcome = _Outcome()
        try:
            # The provider is asked at once; the reply's row is stored just after the provider's
            # first event is relayed (or at the end), with the seq of run_started: the database
            # thread's work then never competes with sending the request and relaying the first
            # token (events keep their order in the writer; checkpoints and _finalise wait for the
            # row).
            self.reply = _new_reply(self.run_row)
            self._run_started = self.writer.emit_tracked(
                "run_started",
                {"run_id": self.run_id, "agent_id": str(self.agent.pk), "message_id": self.message_id},
            )
            if self.refusal:
                outcome = _Outcome(
                    status=RunStatus.FAILED,
                    message_status=MessageStatus.ERROR,
                    error={"code": "agent_unavailable", "message": self.refusal},
                )
                self.writer.emit("error", {**outcome.error, "details": {"run_id": self.run_id}})
            else:
                outcome = await self._generate()
        except asyncio.CancelledError:
            if self.abandoned:
                return  # nothing was logged or stored; the provider's stream is closed
            if self.run_id in self.manager.stopping:
                outcome = _Outcome(
                    status=RunStatus.STOPPED, message_status=MessageStatus.STOPPED, finish_reason="stopped"
                )
            else:
                outcome = _Outcome(status=RunStatus.INCOMPLETE, message_status=MessageStatus.INCOMPLETE)
                await asyncio.shield(self._finalise(outcome))
                raise
        except ProviderError as exc:
            outcome = self._provider_failure(exc)
        except Exception:
            if (await self._vanished())[0]:
                # Deleted under it (a row it wrote had nothing to refer to): a stop, not a failure.
                outcome = _Outcome(
                    status=RunStatus.STOPPED, message_status=MessageStatus.STOPPED, finish_reason="stopped"
                )
                await asyncio.shield(self._finalise(outcome))
                return
            logger.exception("run %s failed", self.run_id)
            outcome = _Outcome(
                status=RunStatus.FAILED,
                message_status=MessageStatus.ERROR,
                error={"code": "internal", "message": "The run failed on the server."},
            )
            self.writer.emit("error", {**outcome.error, "details": {"run_id": self.run_id}})
        try:
            await asyncio.shield(self._finalise(outcome))
        except asyncio.CancelledError:
            if not self.abandoned:  # abandoned: _finalise writes nothing and ends by itself
                raise

    def _provider_failure(self, exc: ProviderError) -> _Outcome:
        message = getattr(exc, "public_message", None) or exc.message
        logger.warning("run %s: provider error (%s): %s", self.run_id, exc.kind, exc.message)
        if exc.kind == "incomplete":
            # Watchers are told why the reply ends here (the `error` frame), and the partial reply
            # is kept as `incomplete`, never passed off as complete.
            error = {"code": "provider_error", "message": message, "kind": exc.kind}
            self.writer.emit("error", {**error, "details": {"run_id": self.run_id, "kind": exc.kind}})
            return _Outcome(status=RunStatus.INCOMPLETE, message_status=MessageStatus.INCOMPLETE, error=error)
        code = PROVIDER_ERROR_CODES.get(exc.kind, "provider_error")
        error = {"code": code, "message": message, "kind": exc.kind}
        data: dict[str, Any] = {**error, "details": {"run_id": self.run_id, "kind": exc.kind}}
        if getattr(exc, "retry_after", None) is not None:
            data["retry_after"] = exc.retry_after
        self.writer.emit("error", data)
        return _Outcome(status=RunStatus.FAILED, message_status=MessageStatus.ERROR, error=error)

    async def _generate(self) -> _Outcome:
        from providers.registry import get_provider

        # Options first: they configure the registry (egress policy included) before it is asked.
        options = generation_options_for(self.agent)
        provider = get_provider(self.agent.provider)
        tool_specs = [
            ToolSpec(
                name=t["name"], description=t.get("description", ""), parameters=t.get("parameters") or {}
            )
            for t in (self.agent.tools or [])
        ]
        # The only tools this run executes: a name the agent does not list is refused.
        executions = {t["name"]: t.get("execution", "server") for t in (self.agent.tools or [])}
        calls_per_round = settings.NEXUS_MAX_TOOL_CALLS_PER_ROUND
        messages = self.history
        if messages is None:
            messages = await db(_history)(self.conversation, self.agent, self.reply.pk)
        agent_id = str(self.agent.pk)
        max_chars = settings.NEXUS_MAX_REPLY_CHARS
        for _round in range(settings.NEXUS_MAX_TOOL_ROUNDS + 1):
            calls: list[ToolCall] = []
            finished: Finished | None = None
            request, request_options = await fit_request(self.agent, messages, options)  # the window
            stream = provider.stream_chat(
                model=self.agent.model, messages=request, tools=tool_specs, options=request_options
            )
            async with contextlib.aclosing(stream):
                async for item in stream:
                    if isinstance(item, TextDelta):
                        if not item.text:
                            continue
                        if self.first_token_at is None:
                            self.first_token_at = time.monotonic()
                        text = item.text[: max_chars - self.text_chars]
                        if text:
                            self.text.append(text)
                            self.text_chars += len(text)
                            self.writer.emit_chunk(message_id=self.message_id, agent_id=agent_id, chunk=text)
                            self._maybe_checkpoint()
                        if len(text) < len(item.text):
                            return self._reply_too_long(max_chars)  # closes the provider's stream
                    elif isinstance(item, ToolCall):
                        calls.append(item)
                    elif isinstance(item, UsageReport):
                        self._add_usage(item.usage)
                    elif isinstance(item, Finished):
                        finished = item
                        self._add_usage(item.usage)
                    if self._storing_reply is None:
                        # The reply's row once the provider's first event is relayed: the database
                        # thread's Python holds the GIL for about 1.5 ms, and run at once it delayed
                        # the socket's write of the first token (time to first token).
                        self._store_reply_soon(pause=REPLY_ROW_PAUSE)
            if finished is None:
                raise ProviderError("incomplete", "The provider's stream ended before it finished.")
            if finished.reason == "blocked":
                error = {
                    "code": "provider_error",
                    "message": "The provider blocked this reply.",
                    "kind": "blocked",
                }
                self.writer.emit("error", {**error, "details": {"run_id": self.run_id, "kind": "blocked"}})
                return _Outcome(
                    status=RunStatus.FAILED,
                    message_status=MessageStatus.ERROR,
                    finish_reason="blocked",
                    error=error,
                )
            if not calls or finished.reason not in ("tool_calls", "stop"):
                return _Outcome(finish_reason=finished.reason)
            if _round >= settings.NEXUS_MAX_TOOL_ROUNDS:
                self.writer.emit("info", {"code": "tool_round_limit", "message": "Tool round limit reached."})
                return _Outcome(finish_reason="tool_round_limit")
            messages = [*messages, ChatMessage(role="assistant", content="", tool_calls=tuple(calls))]
            if len(calls) > calls_per_round:
                logger.warning(
                    "run %s: the model made %d tool calls in one round; %d refused (cap %d)",
                    self.run_id,
                    len(calls),
                    len(calls) - calls_per_round,
                    calls_per_round,
                )
                self.writer.emit(
                    "info",
                    {
                        "code": "tool_call_limit",
                        "message": f"Only {calls_per_round} tool calls per round run; "
                        f"{len(calls) - calls_per_round} were refused.",
                    },
                )
            for index, call in enumerate(calls):
                if index < calls_per_round:
                    outcome = await self._run_tool(call, executions.get(call.name))
                else:  # every call needs an answer in the model's next request
                    outcome = run_tools.over_cap_outcome(calls_per_round)
                messages.append(
                    ChatMessage(
                        role="tool",
                        content=json.dumps(outcome, ensure_ascii=False, default=str),
                        tool_call_id=call.id,
                        name=call.name,
                    )
                )
        return _Outcome(finish_reason="tool_round_limit")

    def _reply_too_long(self, max_chars: int) -> _Outcome:
        """The reply reached NEXUS_MAX_REPLY_CHARS: it ends there, ``incomplete``, finish reason
        ``length`` (as a provider's own token limit), and watchers are told why."""
        logger.warning("run %s: the reply reached %d characters; cut there", self.run_id, max_chars)
        self.writer.emit(
            "info",
            {
                "code": "reply_too_long",
                "message": f"The reply reached the limit of {max_chars} characters and was cut there.",
                "run_id": self.run_id,
                "limit": max_chars,
            },
        )
        return _Outcome(
            status=RunStatus.INCOMPLETE, message_status=MessageStatus.INCOMPLETE, finish_reason="length"
        )

    async def _run_tool(self, call: ToolCall, execution: str | None) -> dict[str, Any]:
        if not await self._start_committed():
            raise asyncio.CancelledError  # abandoned: being cancelled already

        return await run_tools.run_tool_call(self, call, execution)

    def _add_usage(self, usage: Any) -> None:
        if usage is None:
            return
        self.usage["input_tokens"] = max(self.usage["input_tokens"], getattr(usage, "input_tokens", 0) or 0)
        self.usage["output_tokens"] = max(
            self.usage["output_tokens"], getattr(usage, "output_tokens", 0) or 0
        )
        self.usage["total_tokens"] = self.usage["input_tokens"] + self.usage["output_tokens"]

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if now - self._last_checkpoint < settings.NEXUS_CHECKPOINT_SECONDS:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._last_checkpoint = now
        self._checkpointing = asyncio.get_running_loop().create_task(
            self._checkpoint("".join(self.text), self.writer.last_seq)
        )

    async def _checkpoint(self, content: str, last_seq: int) -> None:
        if not await self._start_committed():
            return
        if self._storing_reply is not None:
            await asyncio.shield(self._storing_reply)  # the row first: an update of nothing is lost
        await db(_checkpoint)(self.reply.pk, content, self.conversation.pk, last_seq)

    def _store_reply_soon(self, *, pause: float = 0.0) -> None:
        self._storing_reply = asyncio.get_running_loop().create_task(
            self._record_reply(self._run_started, self.writer.logged(), pause)
        )

    async def _record_reply(
        self, started: asyncio.Future[int], logged: asyncio.Future[int], pause: float
    ) -> None:
        if not await self._start_committed():
            return
        seq = await started
        await logged
        if pause:
            await asyncio.sleep(pause)
        await db(_store_reply)(
            self.reply, self.run_id, seq, trigger_seq=self.claimed.trigger_seq, touch=self.touch
        )

    async def _finalise(self, outcome: _Outcome) -> None:
        if not await self._start_committed():
            return
        content = "".join(self.text)
        elapsed = time.monotonic() - self.started
        metadata = {
            "provider": self.agent.provider,
            "model": self.agent.model,
            "usage": self.usage,
            "finish_reason": outcome.finish_reason,
            "latency_ms": round(elapsed * 1000, 1),
            "time_to_first_token_ms": round((self.first_token_at - self.started) * 1000, 1)
            if self.first_token_at
            else None,
        }
        if outcome.error:  # why it failed, shown with the reply after a reload
            metadata["error"] = outcome.error
        if self._storing_reply is None and self.reply is not None:
            self._store_reply_soon()
        if self._checkpointing is not None:
            with contextlib.suppress(Exception):
                await self._checkpointing
        if self._storing_reply is not None:
            try:
                await self._storing_reply
            except Exception:
                if await self._end_deleted(content):
                    return
                logger.exception("run %s: its reply could not be stored", self.run_id)
                return  # still running in the database: the sweeper declares it incomplete
        if self.reply is None:
            return
        finished = await db(_finish)(
            self.run_id, self.reply.pk, content=content, outcome=outcome, usage=self.usage, metadata=metadata
        )
        if not finished:
            # The sweeper already declared it incomplete and told everyone, or it was deleted.
            await self._end_deleted(content)
            return
        agent_id = str(self.agent.pk)
        self.writer.emit(
            "streaming_chunk",
            {"messageId": self.message_id, "agent_id": agent_id, "chunk": "", "isDone": True},
        )
        self.writer.emit(
            "agent_message",
            {
                "messageId": self.message_id,
                "agent_id": agent_id,
                "agent_name": self.agent.name,
                "content": content,
                "status": outcome.message_status,
                "metadata": metadata,
            },
        )
        finished_data: dict[str, Any] = {"run_id": self.run_id, "status": outcome.status, "usage": self.usage}
        if outcome.error:
            finished_data["error"] = outcome.error
        self.writer.emit(
            "run_finished", {**finished_data, "agent_id": agent_id, "message_id": self.message_id}
        )
        last_seq = await self.writer.flush()
        await db(_checkpoint_seq)(self.conversation.pk, last_seq)

    async def _vanished(self) -> tuple[bool, bool]:
        """(the run's row is gone, its conversation's too); (False, False) if the database cannot
        tell (the failure at hand is then reported as it is)."""
        try:
            return await db(_vanished)(self.run_id, self.conversation.pk)
        except Exception:
            return False, False

    async def _end_deleted(self, content: str) -> bool:
        """The run's row was deleted while it replied: a quiet stop (no error, no traceback). When
        its conversation was deleted, whoever deleted it told the watchers
        (``runs.services.conversation_delete_with_runs``); when only the run or its agent was, the
        reply stays, stopped, and the watchers get ``run_finished`` ``stopped``. False if the
        run's row is still there."""
        run_gone, conversation_gone = await self._vanished()
        if not run_gone:
            return False
        logger.info("run %s: deleted while it replied; stopped", self.run_id)
        if conversation_gone:
            return True
        if self.reply is not None:
            await db(_stop_orphan_reply)(self.reply.pk, content)
        self.writer.emit(
            "run_finished",
            {
                "run_id": self.run_id,
                "status": RunStatus.STOPPED,
                "usage": self.usage,
                "agent_id": str(self.agent.pk),
                "message_id": self.message_id,
            },
        )
        await self.writer.flush()
        return True


def _checkpoint_seq(conversation_id: Any, last_seq: int) -> None:
    Conversation.objects.filter(pk=conversation_id, last_seq__lt=last_seq).update(
        last_seq=last_seq, updated_at=timezone.now()
    )


# --- the sweeper -------------------------------------------------------------------------------------


SWEEP_SECONDS = 1.0


def _stale_cutoff() -> Any:
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
    busy = Run.objects.filter(status=RunStatus.RUNNING).values("conversation_id")
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


def _reply_content(message_id: Any) -> str:
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
        writer.emit(
            "agent_message",
            {
                "messageId": message_id,
                "agent_id": agent_id,
                "agent_name": run.agent.name,
                "content": content,
                "status": MessageStatus.INCOMPLETE,
                "metadata": {"provider": run.agent.provider, "model": run.agent.model, "finish_reason": None},
            },
        )
        writer.emit(
            "run_finished",
            {
                "run_id": str(run.pk),
                "status": RunStatus.INCOMPLETE,
                "usage": run.usage or {},
                "agent_id": agent_id,
                "message_id": message_id,
            },
        )
        await db(_checkpoint_seq)(run.conversation_id, await writer.flush())
        from runs import sessions

        if not await sessions.after_run(run_id=str(run.pk), conversation_id=str(run.conversation_id)):
            await dispatch_next_queued(run.conversation_id)
    if not housekeeping:
        return count
    for run_id in await db(_lost_queued_runs)():
        await dispatch_run(run_id)
    for conversation_id, owner_id, last_seq in await db(_expire_idle_conversations)():
        writer = EventWriter(get_event_log(), conversation_id, owner_id=owner_id, floor=last_seq)
        writer.emit(
            "system",
            {
                "code": "session_expired",
                "message": "The conversation expired after inactivity.",
                "status": "expired",
            },
        )
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
