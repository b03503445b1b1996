"""Reads of conversations and messages, and the one access rule for them."""

from __future__ import annotations

from typing import Any

from django.db.models import Exists, OuterRef, QuerySet

from conversations.models import ACTIVE_RUN_STATUSES, Conversation, Message, Run
from nexus.errors import NotFound, parse_uuid


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


def conversation_get_for_user(
    *, user: Any, conversation_id: Any, for_update: bool = False, with_active_run: bool = False
) -> Conversation:
    """The conversation if the user may see it; otherwise NotFound (never a leak of existence).
    ``for_update``: its row alone, locked until the caller's transaction ends.
    ``with_active_run``: ``has_active_run`` (a queued or running run) read in the same query."""
    pk = parse_uuid(conversation_id, what="Conversation")
    queryset = conversation_queryset_for_user(user)
    if for_update:
        queryset = queryset.select_related(None).select_for_update()
    if with_active_run:
        queryset = queryset.annotate(
            has_active_run=Exists(
                Run.objects.filter(conversation=OuterRef("pk"), status__in=ACTIVE_RUN_STATUSES)
            )
        )
    try:
        return queryset.get(pk=pk)
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


def run_active_for_conversation(*, conversation_id: Any) -> Run | None:
    return (
        Run.objects.filter(conversation_id=conversation_id, status__in=ACTIVE_RUN_STATUSES)
        .order_by("created_at")
        .first()
    )


def runs_in_flight() -> QuerySet[Run]:
    return Run.objects.filter(status__in=ACTIVE_RUN_STATUSES).select_related("conversation", "agent")


def conversation_list_with_agents(*, user: Any) -> QuerySet[Conversation]:
    """``conversation_list`` with each conversation's participants and agents prefetched."""
    from django.db.models import Prefetch

    from conversations.models import Participant

    participants = Participant.objects.select_related("agent").order_by("position")
    return conversation_list(user=user).prefetch_related(Prefetch("participants", queryset=participants))
