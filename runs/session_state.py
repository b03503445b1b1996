"""A conversation as a client resyncs to it, and binding a socket to a conversation."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from django.db import IntegrityError, transaction

from agents.models import Agent, AgentStatus
from agents.selectors import agent_get_for_user, agent_list
from conversations.branches import Siblings, siblings_for
from conversations.models import Conversation, Message
from conversations.selectors import (
    conversation_for_client_session,
    conversation_get_for_user,
    conversation_participants,
    message_list,
)
from conversations.services import (
    conversation_context_validate,
    conversation_create,
    conversation_preferences_set,
)
from core.auth import User
from core.errors import NotFound
from runs.eventlog import get_event_log
from runs.manager import get_run_manager
from runs.models import ACTIVE_RUN_STATUSES, PendingKind, PendingStatus, PendingToolCall, Run
from runs.store import db

# --- session state and binding ------------------------------------------------------------------------


def message_as_dict(message: Message, siblings: dict[Any, Siblings] | None = None) -> dict[str, Any]:
    found = (siblings or {}).get(message.pk)
    return {
        "id": str(message.pk),
        "seq": message.seq,
        "role": message.role,
        "type": message.type,
        "agent_id": str(message.agent_id) if message.agent_id else None,
        "content": message.content,
        "status": message.status,
        # without the attached files' text (the model's, runs.attachments): the references stay
        "metadata": {k: v for k, v in (message.metadata or {}).items() if k != "attachments_text"},
        "opinion": message.opinion,
        "client_message_id": message.client_message_id,
        "parent_id": str(message.parent_id) if message.parent_id else None,
        "sibling_ids": found.ids if found is not None else [str(message.pk)],
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
    siblings = siblings_for(messages)
    active = list(
        Run.objects.filter(conversation=conversation, status__in=ACTIVE_RUN_STATUSES).order_by("created_at")
    )
    # The calls paused runs wait on (runs.approvals): a page that reconnects shows them again.
    waiting = list(
        PendingToolCall.objects.filter(
            conversation=conversation, status=PendingStatus.PENDING, run__status__in=ACTIVE_RUN_STATUSES
        ).order_by("created_at")
    )
    pending_tools = [
        {
            "toolCallId": p.tool_call_id,
            "tool": p.tool,
            "parameters": p.parameters,
            "execution": "client",
            "run_id": str(p.run_id),
        }
        for p in waiting
        if p.kind == PendingKind.CLIENT
    ]
    pending_approvals = [
        {
            "toolCallId": p.tool_call_id,
            "tool": p.tool,
            "parameters": p.parameters,
            "run_id": str(p.run_id),
            "agent_id": p.agent_id,
            "expires_at": p.expires_at.isoformat(),
        }
        for p in waiting
        if p.kind == PendingKind.APPROVAL
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
        "messages": [message_as_dict(m, siblings) for m in messages],
        "active_runs": [
            {"run_id": str(r.pk), "agent_id": str(r.agent_id), "status": r.status} for r in active
        ],
        "pending_tool_calls": pending_tools,
        "pending_approvals": pending_approvals,
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


def _bind(
    *, user: User, conversation_id: uuid.UUID | str | None, agent_id: Any, context: Any
) -> Conversation:
    if conversation_id:
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        if isinstance(context, dict) and context:
            conversation.context = conversation_context_validate({**(conversation.context or {}), **context})
            conversation.save(update_fields=["context", "updated_at"])
        return conversation
    return conversation_create(
        owner=user,
        participants=[(_agent_for(user=user, agent_id=agent_id), "primary")],
        context=context if isinstance(context, dict) else None,
    )


def _agent_for(*, user: User, agent_id: Any) -> Agent:
    """The agent a new conversation starts with: the one named, or the user's first active one."""
    if agent_id:
        return agent_get_for_user(user=user, agent_id=agent_id)
    agent = agent_list(user=user, filters={"status": AgentStatus.ACTIVE}).first()
    if agent is None:
        raise NotFound("No active agent is available.")
    return agent


async def conversation_bind(
    *, user: User, conversation_id: uuid.UUID | str | None = None, agent_id: Any = None, context: Any = None
) -> Conversation:
    """``initialize``: the user's conversation, or a new one with the given (or first active) agent."""
    return await db(_bind)(user=user, conversation_id=conversation_id, agent_id=agent_id, context=context)


def _bind_client_session(
    *, user: User, session_id: str, agent_id: Any, context: Any, preferences: dict[str, Any]
) -> Conversation:
    with transaction.atomic():
        conversation = conversation_for_client_session(user=user, client_session_id=session_id)
        if conversation is None and _is_uuid(session_id):
            with contextlib.suppress(NotFound):
                conversation = conversation_get_for_user(user=user, conversation_id=session_id)
        if conversation is None:
            agent = _agent_for(user=user, agent_id=agent_id)
            try:
                with transaction.atomic():  # a savepoint: another socket may create the same id now
                    conversation = conversation_create(
                        owner=user,
                        participants=[(agent, "primary")],
                        context=context if isinstance(context, dict) else None,
                        client_session_id=session_id,
                    )
            except IntegrityError:
                conversation = conversation_for_client_session(user=user, client_session_id=session_id)
                if conversation is None:
                    raise
        elif isinstance(context, dict) and context:
            conversation.context = conversation_context_validate({**(conversation.context or {}), **context})
            conversation.save(update_fields=["context", "updated_at"])
        return conversation_preferences_set(conversation=conversation, preferences=preferences)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def conversation_bind_client_session(
    *,
    user: User,
    session_id: str,
    agent_id: Any = None,
    context: Any = None,
    preferences: dict[str, Any] | None = None,
) -> Conversation:
    """seed 004's ``initialize``: the user's conversation the client named ``session_id`` (its own
    id, or the conversation's UUID when it is the user's), else a new one under that id, with
    ``context`` merged and the session's ``preferences`` (model, temperature) stored. Another
    user's conversation of the same name or UUID is never bound nor revealed: this user gets a
    conversation of their own under that id."""
    return await db(_bind_client_session)(
        user=user, session_id=session_id, agent_id=agent_id, context=context, preferences=preferences or {}
    )
