"""Reads of conversations and messages, and the one access rule for them."""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import QuerySet

from agents.models import Agent
from conversations.models import (
    ACTIVE_RUN_STATUSES,
    Conversation,
    ConversationStatus,
    Message,
    Participant,
    Run,
)
from core.errors import NotFound, parse_uuid


def conversation_queryset_for_user(user: Any) -> QuerySet[Conversation]:
    """Conversations a user may see: their own; staff see all."""
    qs = Conversation.objects.select_related("owner")
    if getattr(user, "is_staff", False):
        return qs
    if not getattr(user, "is_authenticated", False):
        return qs.none()
    return qs.filter(owner=user)


def conversation_list(*, user: Any) -> QuerySet[Conversation]:
    return conversation_queryset_for_user(user).order_by("-updated_at", "-created_at")


def conversation_get_for_user(*, user: Any, conversation_id: Any) -> Conversation:
    """The conversation if the user may see it; otherwise NotFound (never a leak of existence)."""
    pk = parse_uuid(conversation_id, what="Conversation")
    try:
        return conversation_queryset_for_user(user).get(pk=pk)
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None


def conversation_participants(*, conversation: Conversation) -> list[Any]:
    """The conversation's agents in speaking order, each with ``role`` and ``position`` set."""
    rows = conversation.participants.select_related("agent").order_by("position")
    agents = []
    for row in rows:
        agent = row.agent
        agent.participant_role = row.role
        agent.participant_position = row.position
        agents.append(agent)
    return agents


def conversation_for_send(*, user: Any, conversation_id: Any) -> tuple[Conversation, list[Agent]]:
    """The reads that open a send, on the way to the provider's request (time to first token): the
    conversation if the user may see it (NotFound otherwise), locked until the caller's transaction
    ends where the database can lock a row (SQLite's writers are serialised anyway), with
    ``has_active_run``; and its participants as ``conversation_participants`` gives them.

    The same rows as ``conversation_get_for_user`` and ``conversation_participants``, in SQL written
    once per database: compiling these through the ORM cost about 0.6 ms of Python each, per send
    (docs/benchmarks.md); ``raw`` still converts every column and builds the models."""
    pk = parse_uuid(conversation_id, what="Conversation")
    if not getattr(user, "is_authenticated", False):
        raise NotFound("Conversation not found.")
    staff = bool(getattr(user, "is_staff", False))
    for_update = connection.features.has_select_for_update
    conversation_sql, participants_sql = _send_sql(connection.vendor, staff=staff, for_update=for_update)
    pk_param = Conversation._meta.pk.get_db_prep_value(pk, connection)
    params: list[Any] = [*ACTIVE_RUN_STATUSES, pk_param]
    if not staff:
        params.append(user.pk)
    rows = list(Conversation.objects.raw(conversation_sql, params))
    if not rows:
        raise NotFound("Conversation not found.")
    conversation = rows[0]
    conversation.has_active_run = bool(conversation.has_active_run)
    agents = list(Agent.objects.raw(participants_sql, [pk_param]))
    return conversation, agents


_SEND_SQL: dict[tuple[str, bool, bool], tuple[str, str]] = {}


def _send_sql(vendor: str, *, staff: bool, for_update: bool) -> tuple[str, str]:
    key = (vendor, staff, for_update)
    if key not in _SEND_SQL:
        q = connection.ops.quote_name
        conversations, runs = q(Conversation._meta.db_table), q(Run._meta.db_table)
        agents, participants = q(Agent._meta.db_table), q(Participant._meta.db_table)
        statuses = ", ".join(["%s"] * len(ACTIVE_RUN_STATUSES))
        conversation_sql = (
            f"SELECT c.*, EXISTS(SELECT 1 FROM {runs} r WHERE r.conversation_id = c.id"
            f" AND r.status IN ({statuses})) AS has_active_run"
            f" FROM {conversations} c WHERE c.id = %s"
            + ("" if staff else " AND c.owner_id = %s")
            + (" FOR UPDATE" if for_update else "")
        )
        participants_sql = (
            f"SELECT a.*, p.role AS participant_role, p.position AS participant_position"
            f" FROM {agents} a JOIN {participants} p ON p.agent_id = a.id"
            f" WHERE p.conversation_id = %s ORDER BY p.position, p.id"
        )
        _SEND_SQL[key] = (conversation_sql, participants_sql)
    return _SEND_SQL[key]


def message_list(
    *, conversation: Conversation, after_seq: int | None = None, limit: int | None = None
) -> list[Message]:
    """Messages in conversation order (by seq, then creation)."""
    qs = conversation.messages.select_related("agent").order_by("seq", "created_at")
    if after_seq is not None:
        qs = qs.filter(seq__gt=after_seq)
    if limit is not None:
        # the most recent `limit`, still returned oldest first
        recent = list(
            conversation.messages.order_by("-seq", "-created_at").values_list("pk", flat=True)[:limit]
        )
        qs = qs.filter(pk__in=recent)
    return list(qs)


def message_get_for_user(*, user: Any, message_id: Any) -> Message:
    pk = parse_uuid(message_id, what="Message")
    try:
        return Message.objects.select_related("conversation").get(
            pk=pk, conversation__in=conversation_queryset_for_user(user)
        )
    except Message.DoesNotExist:
        raise NotFound("Message not found.") from None


def runs_in_flight() -> QuerySet[Run]:
    return Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).select_related("conversation", "agent")


def conversation_list_with_agents(*, user: Any) -> QuerySet[Conversation]:
    """``conversation_list`` with each conversation's participants and agents prefetched."""
    from django.db.models import Prefetch

    participants = Participant.objects.select_related("agent").order_by("position")
    return conversation_list(user=user).prefetch_related(Prefetch("participants", queryset=participants))


def agent_status_for_user(*, user: Any, agent: Agent) -> dict[str, Any]:
    """Seed 001 AgentStatus, counted over the conversations ``user`` may see (staff: all).
    Here, not in agents/, since it reads conversations (agents/ does not import conversations/)."""
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
