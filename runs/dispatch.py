"""Dispatch: a queued run handed to an executor, and the claim by which an executor takes it.

``dispatch_run`` hands a run to this process's manager (inline mode) or to the worker pool
(``NEXUS_RUN_CHANNEL``); whoever gets it claims it (``claim_run``: queued -> running, at most once,
one running run per conversation) and reads the provider's input in the same trip (``Claimed``).
A run its sender saw start at once is read first and claimed beside the provider's request
(``read_startable``, then ``take_run`` under an ``EarlyStart``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from agents.models import Agent
from agents.preferences import agent_apply_preferences
from agents.selectors import agent_unavailability
from conversations.models import Conversation, SessionType
from providers.base import ChatMessage
from runs import store
from runs.early_start import EarlyStart
from runs.history import USABLE_STATUSES, chat_history
from runs.models import Run, RunStatus
from runs.store import db
from runs.turns import turn_refusal

logger = logging.getLogger(__name__)


DISPATCH_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a run's sender hands it with the dispatch, so that no write of its own stands between
    the person's message and the provider's request (time to first token). Travels in the worker's
    ``run.execute`` message (``as_message``, ``from_message``)."""

    # (the triggering message's id, its seq): the sender may still be storing the seq; the claim
    # places the message by it and the reply's row stores it if the sender has not.
    trigger_seq: tuple[str, int] | None = None
    touch: bool = False  # the conversation's activity mark is the run's to write (with its reply's row)
    start: bool = False  # nothing else was running: the run may ask its provider while it is claimed

    def as_message(self, run_id: uuid.UUID | str) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "run.execute", "run_id": str(run_id)}
        if self.trigger_seq is not None:
            message["trigger_seq"] = list(self.trigger_seq)
        if self.touch:
            message["touch"] = True
        if self.start:
            message["start"] = True
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> Handoff:
        return cls(
            trigger_seq=parse_trigger_seq(message.get("trigger_seq")),
            touch=message.get("touch") is True,
            start=message.get("start") is True,
        )


NO_HANDOFF = Handoff()


async def dispatch_run(run_id: uuid.UUID | str, handoff: Handoff = NO_HANDOFF) -> None:
    """Hand a queued run to the executor: this process (inline) or the worker pool."""
    if settings.NEXUS_RUN_MODE == "worker":
        message = handoff.as_message(run_id)
        # After a Redis restart the layer's pooled connections are dead and each fails once; a
        # few tries reach a fresh one. If Redis is really down the run stays queued and the
        # sweeper dispatches it again (_lost_queued_runs): the message is stored either way.
        for attempt in range(DISPATCH_ATTEMPTS):
            try:
                layer = get_channel_layer()
                assert layer is not None  # settings.CHANNEL_LAYERS always has a default
                await layer.send(settings.NEXUS_RUN_CHANNEL, message)
                return
            except Exception as exc:
                if attempt + 1 == DISPATCH_ATTEMPTS:
                    logger.warning(
                        "run %s not dispatched (%s); the sweeper will", run_id, exc.__class__.__name__
                    )
                else:
                    await asyncio.sleep(0.05 * (attempt + 1))
    else:
        # Inline the executor is this process's manager, which dispatches each run's successor
        # (runs.manager imports this module): the one import kept in a function in runs/.
        from runs.manager import get_run_manager

        await get_run_manager().launch(str(run_id), handoff)


async def dispatch_next_queued(conversation_id: uuid.UUID | str) -> None:
    run_id = await db(store.next_queued_run_id)(conversation_id)
    if run_id is not None:
        await dispatch_run(run_id)


def parse_trigger_seq(value: Any) -> tuple[str, int] | None:
    """A (message id, seq) pair from a dispatch message, or None when absent or malformed."""
    if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[1], int):
        return str(value[0]), value[1]
    return None


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
    # A run launched before its start is committed (runs.early_start): None for any other run.
    early: EarlyStart | None = None


def take_run(run_id: str, owner: str, *, touch: bool = False) -> bool:
    """Queued -> running, at most once, one running run per conversation: the claim itself."""
    now = timezone.now()
    try:  # one statement, atomic by itself: no BEGIN/COMMIT round trips before the first token
        taken = Run.objects.filter(pk=run_id, status=RunStatus.QUEUED, cancel_requested=False).update(
            status=RunStatus.RUNNING, owner=owner, started_at=now, heartbeat_at=now
        )
    except IntegrityError:
        taken = 0  # another run of the conversation is running; it starts this one when done
    if not taken and touch:  # the send left its activity mark to this run, which is not starting
        store.mark_activity(Conversation.objects.filter(runs__pk=run_id))
    return bool(taken)


def claim_run(run_id: str, owner: str, handoff: Handoff = NO_HANDOFF) -> Claimed | None:
    """Take a queued run, then read what it needs."""
    if not take_run(run_id, owner, touch=handoff.touch):
        return None
    run = _run_with_input(run_id)
    assert run is not None  # taken just now, by this process
    refusal = _refusal(run.agent)
    if refusal is None and turn_refusal(run) is not None:
        return None  # a session past its limits takes no more turns, whoever dispatched this one
    return _claimed(run, handoff, refusal=refusal)


def read_startable(run_id: str, handoff: Handoff) -> Claimed | None:
    """What a run its sender saw start at once needs, read before it is taken (``take_run`` follows
    while the provider is asked); None if it cannot start that way (``claim_run`` then)."""
    run = _run_with_input(run_id)
    if (
        run is None
        or run.status != RunStatus.QUEUED
        or run.cancel_requested
        or run.conversation.session_type != SessionType.HUMAN_AGENT
        or _refusal(run.agent) is not None
    ):
        return None
    return _claimed(run, handoff, refusal=None)


def _run_with_input(run_id: str) -> Run | None:
    """The run with what its provider's input is made of: agent, conversation, triggering message."""
    return Run.objects.select_related("agent", "conversation", "trigger_message").filter(pk=run_id).first()


def _refusal(agent: Agent) -> str | None:
    unavailable = agent_unavailability(agent=agent)
    return unavailable.message if unavailable is not None else None


def _claimed(run: Run, handoff: Handoff, *, refusal: str | None) -> Claimed:
    # The provider's input, read in the same trip to the database: nothing else stands between
    # the claim and the provider's request (time to first token). The sender may still be storing
    # the triggering message's seq: the history places it by the seq it was dispatched with, and
    # the reply's row stores it if the sender has not (no write here).
    trigger_seq = handoff.trigger_seq
    # The session's model/temperature preferences, where this agent allows them (the run's own
    # copy of the agent row: its history, options, token counting and stored metadata all see them).
    agent_apply_preferences(run.agent, run.conversation.settings or {})
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
        touch=handoff.touch,
    )
