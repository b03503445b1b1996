"""Reads of agents, and the one access rule for them."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Q, QuerySet

from agents.models import Agent
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
