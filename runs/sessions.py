"""Agent-to-agent sessions: turns alternate automatically on the run engine, within limits.

Every limit is checked against the database when a turn is claimed (``runs.turns.turn_refusal``),
so no session exceeds its turns even when workers restart or a dispatch is delivered twice.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.db import transaction
from django.utils import timezone

from conversations.models import Conversation, ConversationStatus, SessionType
from conversations.services import MAX_TURNS_DEFAULT
from runs.dispatch import dispatch_run
from runs.domain_events import ConversationEnded, Cooldown, Info
from runs.eventlog import get_event_log
from runs.events import EventWriter
from runs.models import ACTIVE_RUN_STATUSES, Run, RunStatus
from runs.turns import tokens_used, turns_taken


def _next_step(run_id: str, conversation_id: str) -> dict[str, Any] | None:
    """Decide what follows a finished turn: the next run (with its cooldown), an end, or nothing."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation_id)
        if (
            conversation.session_type != SessionType.AGENT_AGENT
            or conversation.status != ConversationStatus.ACTIVE
        ):
            return None
        run = Run.objects.select_related("reply_message").get(pk=run_id)
        if run.status not in (RunStatus.COMPLETED, RunStatus.INCOMPLETE):
            return None  # stopped or failed: the session waits for a person
        if Run.objects.filter(conversation=conversation, status__in=ACTIVE_RUN_STATUSES).exists():
            return None  # a person's interjection is already queued; the loop resumes after it
        settings = conversation.settings or {}
        phrase = (settings.get("termination_phrase") or "").strip().lower()
        content = (run.reply_message.content if run.reply_message else "").lower()
        turns = turns_taken(conversation.pk)
        end = None
        if phrase and phrase in content:
            end = ("goal_reached", "The termination phrase was said: the goal is reached.")
        elif settings.get("token_budget") and tokens_used(conversation.pk) >= int(settings["token_budget"]):
            end = ("budget_exhausted", "The session's token budget is spent.")
        elif turns >= int(settings.get("max_turns", MAX_TURNS_DEFAULT)):
            end = ("turn_limit_reached", f"The session reached its limit of {turns} turns.")
        if end is not None:
            conversation.status = ConversationStatus.COMPLETED
            conversation.save(update_fields=["status", "updated_at"])
            return {"end": end, "conversation": conversation}
        agents = [p.agent for p in conversation.participants.select_related("agent").order_by("position")]
        next_agent = agents[turns % len(agents)]
        next_run = Run.objects.create(conversation=conversation, agent=next_agent, status=RunStatus.QUEUED)
        cooldown = float(settings.get("cooldown_seconds") or 0)
        return {
            "run_id": str(next_run.pk),
            "agent_id": str(next_agent.pk),
            "cooldown": cooldown,
            "conversation": conversation,
        }


async def after_run(*, run_id: str, conversation_id: str) -> bool:
    """Continue an agent-agent session after a turn. True if it took care of dispatching."""
    step = await sync_to_async(_next_step)(run_id, conversation_id)
    if step is None:
        return False
    conversation = step["conversation"]
    writer = EventWriter(
        get_event_log(), conversation_id, owner_id=conversation.owner_id, floor=conversation.last_seq
    )
    if "end" in step:
        code, message = step["end"]
        writer.emit(Info(code=code, message=message))
        writer.emit(ConversationEnded.session_completed())
        await writer.flush()
        return True
    if step["cooldown"] > 0:
        until = timezone.now() + timedelta(seconds=step["cooldown"])
        writer.emit(Cooldown(agent_id=step["agent_id"], until=until))
        await writer.flush()
        loop = asyncio.get_running_loop()
        loop.call_later(step["cooldown"], lambda: loop.create_task(dispatch_run(step["run_id"])))
        return True
    await dispatch_run(step["run_id"])
    return True
