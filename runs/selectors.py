"""Reads of runs, and the reads that open a send (they read the conversation and its runs at once).

Here rather than in conversations/selectors.py: conversations/ does not import runs/.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from agents.models import Agent
from conversations.models import Conversation, ConversationStatus, Message, Participant
from conversations.selectors import conversation_access, conversation_queryset_for_user
from core.auth import User
from core.errors import NotFound, parse_uuid
from runs.models import ACTIVE_RUN_STATUSES, Run


def conversation_for_send(
    *, user: User, conversation_id: uuid.UUID | str
) -> tuple[Conversation, list[Agent]]:
    """The reads that open a send, on the way to the provider's request (time to first token): the
    conversation if the user may see it (NotFound otherwise), locked until the caller's transaction
    ends where the database can lock a row (SQLite's writers are serialised anyway), with
    ``has_active_run``; and its participants as ``conversation_participants`` gives them.

    The same rows as ``conversation_get_for_user`` and ``conversation_participants``, in SQL written
    once per database: compiling these through the ORM cost about 0.6 ms of Python each, per send
    (docs/benchmarks.md); ``raw`` still converts every column and builds the models."""
    pk = parse_uuid(conversation_id, what="Conversation")
    access = conversation_access(user)  # the rule conversation_get_for_user applies, as SQL below
    if access.nothing:
        raise NotFound("Conversation not found.")
    for_update = connection.features.has_select_for_update
    conversation_sql, participants_sql = _send_sql(
        connection.vendor, everyone=access.everyone, for_update=for_update
    )
    pk_param = Conversation._meta.pk.get_db_prep_value(pk, connection)
    params: list[Any] = [*ACTIVE_RUN_STATUSES, pk_param]
    if not access.everyone:
        params.append(access.owner_id)
    rows = list(Conversation.objects.raw(conversation_sql, params))
    if not rows:
        raise NotFound("Conversation not found.")
    conversation = rows[0]
    # a column of the raw query, not a field of the model
    conversation.has_active_run = bool(conversation.has_active_run)  # type: ignore[attr-defined]
    agents = list(Agent.objects.raw(participants_sql, [pk_param]))
    return conversation, agents


_SEND_SQL: dict[tuple[str, bool, bool], tuple[str, str]] = {}


def _send_sql(vendor: str, *, everyone: bool, for_update: bool) -> tuple[str, str]:
    """The send path's two queries; ``everyone``: ``ConversationAccess.everyone`` (else the
    conversation must be ``owner_id``'s, the one parameter after its id)."""
    key = (vendor, everyone, for_update)
    if key not in _SEND_SQL:
        q = connection.ops.quote_name
        conversations, runs = q(Conversation._meta.db_table), q(Run._meta.db_table)
        agents, participants = q(Agent._meta.db_table), q(Participant._meta.db_table)
        statuses = ", ".join(["%s"] * len(ACTIVE_RUN_STATUSES))
        conversation_sql = (
            f"SELECT c.*, EXISTS(SELECT 1 FROM {runs} r WHERE r.conversation_id = c.id"
            f" AND r.status IN ({statuses})) AS has_active_run"
            f" FROM {conversations} c WHERE c.id = %s"
            + ("" if everyone else " AND c.owner_id = %s")
            + (" FOR UPDATE" if for_update else "")
        )
        participants_sql = (
            f"SELECT a.*, p.role AS participant_role, p.position AS participant_position"
            f" FROM {agents} a JOIN {participants} p ON p.agent_id = a.id"
            f" WHERE p.conversation_id = %s ORDER BY p.position, p.id"
        )
        _SEND_SQL[key] = (conversation_sql, participants_sql)
    return _SEND_SQL[key]


def runs_in_flight() -> QuerySet[Run]:
    return Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).select_related("conversation", "agent")


def agent_status_for_user(*, user: User, agent: Agent) -> dict[str, Any]:
    """Seed 001 AgentStatus, counted over the conversations ``user`` may see (staff: all).
    Here, not in agents/ or conversations/, since it reads runs too (the domain apps import no runs/)."""
    visible = conversation_queryset_for_user(user)
    runs = Run.objects.filter(agent=agent, status__in=ACTIVE_RUN_STATUSES, conversation__in=visible)
    return {
        "agent_id": agent.id,
        "agent_type": agent.provider,
        "name": agent.name,
        "status": agent.status,
        "last_active": agent.last_active_at,
        "capabilities": list(agent.capabilities or []),
        "interaction_modes": list(agent.interaction_modes or []),
        "owner_id": agent.owner_id,
        "is_running": runs.exists(),
        "message_count": Message.objects.filter(agent=agent, conversation__in=visible).count(),
        "metadata": {
            "provider": agent.provider,
            "model": agent.model,
            "cooldown_until": agent.cooldown_until,
            "active_conversations": visible.filter(
                participants__agent=agent, status=ConversationStatus.ACTIVE
            ).count(),
        },
    }
