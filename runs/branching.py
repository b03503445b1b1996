"""Regenerate a reply, continue a reply cut by length, and choose a branch (the message tree).

Each starts a run like a send does (``runs.sending``) and meets the same quotas (runs per minute,
active runs per owner) and refusals (an unavailable agent; an expired conversation is revived, as by a send), but never
while a reply is being generated (``conflict``). A regenerated reply is a sibling of the one it
replaces (same parent), which steps off the active path with everything after it; a continuation
is a new reply following the cut one, whose run sees the cut reply as its last turn and is asked to
go on (``runs.history.CONTINUE_PROMPT``). Editing a message is a send (``message_send(edit_of=)``).
Each announces itself with a ``branch`` event (``{action, message_id, run_id}``) before the run's
own events, so pages drop what stepped off the path.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db import transaction

from agents.models import Agent
from agents.selectors import agent_unavailability
from conversations.branches import hidden_recompute, message_get_in, message_select, message_tip, siblings_of
from conversations.models import (
    Conversation,
    Message,
    MessageRole,
    MessageType,
    SessionType,
)
from conversations.selectors import conversation_get_for_user
from conversations.services import conversation_idle_expiry, conversation_revive
from core.auth import User
from core.errors import AgentUnavailable, Conflict, ValidationFailed
from runs.dispatch import dispatch_run
from runs.domain_events import Branched
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.models import ACTIVE_RUN_STATUSES, Run
from runs.quotas import active_runs_admit, run_rate_admit
from runs.selectors import conversation_for_send
from runs.store import db


@dataclass(frozen=True, slots=True)
class BranchResult:
    action: str
    message_id: str  # the message acted on
    run_id: str | None
    conversation_id: str


def _turn_agent(message: Message, participants: list[Agent]) -> Agent:
    if not participants:
        raise ValidationFailed(
            "This conversation has no agent.", details={"agent_id": ["No agent to answer."]}
        )
    for agent in participants:
        if agent.pk == message.agent_id:
            return agent
    return participants[0]  # the agent that wrote it left the conversation: its first agent answers


def _store_branch_run(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str, action: str
) -> tuple[Conversation, Run]:
    with transaction.atomic():
        conversation, participants = conversation_for_send(user=user, conversation_id=conversation_id)
        target = message_get_in(conversation=conversation, message_id=message_id)
        conversation_revive(conversation)  # as a new message does (rolled back if refused below)
        if conversation.session_type != SessionType.HUMAN_AGENT:
            raise ValidationFailed(
                f"Replies are {action}d in conversations with one agent only.",
                details={"message_id": ["Not in an agent-to-agent session."]},
            )
        if target.role != MessageRole.AGENT or target.type != MessageType.MESSAGE:
            raise ValidationFailed(
                f"Only an agent's reply can be {action}d.", details={"message_id": ["Not a reply."]}
            )
        if target.hidden:
            raise ValidationFailed(
                "That reply is not on the active branch.",
                details={"message_id": ["Choose its branch first."]},
            )
        if conversation.has_active_run:  # type: ignore[attr-defined]  # a column of the raw query
            raise Conflict("A reply is still being generated; wait for it or stop it.")
        if action == "regenerate":
            trigger = target.parent
            if trigger is None:
                raise ValidationFailed(
                    "This reply answers no message; it cannot be regenerated.",
                    details={"message_id": ["No message before it."]},
                )
        else:  # continue
            if (target.metadata or {}).get("finish_reason") != "length":
                raise ValidationFailed(
                    "Only a reply cut off at the length limit can be continued.",
                    details={"message_id": ["Not cut by length."]},
                )
            if str(message_tip(conversation_id=conversation.pk)) != str(target.pk):
                raise ValidationFailed(
                    "Only the last reply can be continued.", details={"message_id": ["Not the last message."]}
                )
            trigger = target
        agent = _turn_agent(target, participants)
        unavailable = agent_unavailability(agent=agent)
        if unavailable is not None:
            raise AgentUnavailable(unavailable.message, retry_after=unavailable.retry_after)
        active_runs_admit(owner_id=conversation.owner_id)
        if action == "regenerate":  # the new reply (selected) will stand beside it
            siblings_of(target).update(selected=False)
            hidden_recompute(conversation_id=conversation.pk)
        conversation.expires_at = conversation_idle_expiry()
        conversation.save(update_fields=["updated_at", "expires_at"])
        run = Run.objects.create(conversation=conversation, agent=agent, trigger_message=trigger)
    return conversation, run


async def _branch_run(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str, action: str
) -> BranchResult:
    await run_rate_admit(user=user)
    conversation, run = await db(_store_branch_run)(
        user=user, conversation_id=conversation_id, message_id=message_id, action=action
    )
    writer = EventWriter(
        get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    await writer.emit_now(Branched(action=action, message_id=str(message_id), run_id=str(run.pk)))
    await dispatch_run(str(run.pk))
    return BranchResult(action, str(message_id), str(run.pk), str(conversation.pk))


async def message_regenerate(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str
) -> BranchResult:
    """Answer again the message an agent's reply answered: the new reply is its sibling."""
    return await _branch_run(
        user=user, conversation_id=conversation_id, message_id=message_id, action="regenerate"
    )


async def message_continue(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str
) -> BranchResult:
    """Go on with a reply cut off at the length limit: a new reply follows it."""
    return await _branch_run(
        user=user, conversation_id=conversation_id, message_id=message_id, action="continue"
    )


def _select(*, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str) -> Conversation:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    message = message_get_in(conversation=conversation, message_id=message_id)
    if conversation.runs.filter(status__in=ACTIVE_RUN_STATUSES).exists():
        raise Conflict("A reply is still being generated; wait for it or stop it.")
    message_select(message=message)
    return conversation


async def message_choose(
    *, user: User, conversation_id: uuid.UUID | str, message_id: uuid.UUID | str
) -> BranchResult:
    """Make a message the chosen one among its siblings: the active path goes through it."""
    conversation = await db(_select)(user=user, conversation_id=conversation_id, message_id=message_id)
    writer = EventWriter(
        get_event_log(), str(conversation.pk), owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    await writer.emit_now(Branched(action="select", message_id=str(message_id), run_id=None))
    return BranchResult("select", str(message_id), None, str(conversation.pk))
