"""Reads of agents, and the one access rule for them."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import Agent, AgentStatus
from core.errors import NotFound, parse_uuid


def agent_queryset_for_user(user: Any) -> QuerySet[Agent]:
    """Agents a user may see and use: their own and the shared ones (owner null); staff see all."""
    qs = Agent.objects.select_related("owner")
    if getattr(user, "is_staff", False):
        return qs
    if not getattr(user, "is_authenticated", False):
        return qs.none()
    return qs.filter(Q(owner=user) | Q(owner__isnull=True))


def agent_list(*, user: Any, filters: dict[str, str] | None = None) -> QuerySet[Agent]:
    qs = agent_queryset_for_user(user)
    for key in ("status", "workspace", "provider"):
        value = (filters or {}).get(key)
        if value:
            qs = qs.filter(**{key: value})
    return qs.order_by("name", "created_at")


def agent_get_for_user(*, user: Any, agent_id: uuid.UUID | str) -> Agent:
    """The agent if the user may use it; otherwise NotFound (never a leak of existence)."""
    pk = parse_uuid(agent_id, what="Agent")
    try:
        return agent_queryset_for_user(user).get(pk=pk)
    except Agent.DoesNotExist:
        raise NotFound("Agent not found.") from None


def agent_can_edit(*, user: Any, agent: Agent) -> bool:
    """Owners edit their agents; shared agents are edited by staff only."""
    if getattr(user, "is_staff", False):
        return True
    return agent.owner_id is not None and agent.owner_id == getattr(user, "id", None)


@dataclass(frozen=True, slots=True)
class AgentUnavailability:
    """Why an agent takes no new run now: the one availability rule (``agent_unavailability``)."""

    message: str
    retry_after: float | None = None  # seconds, for a cooldown


def agent_unavailability(*, agent: Agent) -> AgentUnavailability | None:
    """None if the agent may reply now; else why not: paused, in error, or cooling down (until a
    time still to come). Checked when a message is sent and again when its run is claimed."""
    now = timezone.now()
    if agent.status == AgentStatus.PAUSED or agent.status == AgentStatus.ERROR:
        return AgentUnavailability(f"{agent.name} is {agent.status}.")
    if agent.status == AgentStatus.COOLDOWN and agent.cooldown_until and agent.cooldown_until > now:
        until: datetime = agent.cooldown_until
        return AgentUnavailability(
            f"{agent.name} is cooling down until {until.isoformat()}.",
            retry_after=(until - now).total_seconds(),
        )
    return None
