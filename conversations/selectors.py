"""Reads of conversations and messages, and the one access rule for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Prefetch, QuerySet

from conversations.models import Conversation, Message, Participant
from core.errors import NotFound, parse_uuid


@dataclass(frozen=True, slots=True)
class ConversationAccess:
    """The one access rule for conversations (and so for their messages, runs and events): staff
    see every conversation, a signed-in user their own, anyone else none. Every reader applies it
    through this: the ORM querysets, the send path's SQL, the monitor socket's filter."""

    everyone: bool = False  # staff: every conversation
    owner_id: Any = None  # otherwise only this owner's (None: none at all)

    @property
    def nothing(self) -> bool:
        return not self.everyone and self.owner_id is None

    def permits(self, owner_id: Any) -> bool:
        """Whether a conversation owned by ``owner_id`` is visible."""
        return self.everyone or (self.owner_id is not None and owner_id == self.owner_id)


def conversation_access(user: Any) -> ConversationAccess:
    """What ``user`` may see of the conversations (see ``ConversationAccess``)."""
    if getattr(user, "is_staff", False):
        return ConversationAccess(everyone=True)
    if not getattr(user, "is_authenticated", False):
        return ConversationAccess()
    return ConversationAccess(owner_id=user.pk)


def conversation_queryset_for_user(user: Any) -> QuerySet[Conversation]:
    """Conversations a user may see: their own; staff see all (``conversation_access``)."""
    qs = Conversation.objects.select_related("owner")
    access = conversation_access(user)
    if access.everyone:
        return qs
    if access.nothing:
        return qs.none()
    return qs.filter(owner_id=access.owner_id)


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


def message_list(
    *,
    conversation: Conversation,
    after_seq: int | None = None,
    limit: int | None = None,
    all_branches: bool = False,
) -> list[Message]:
    """Messages in conversation order (by seq, then creation): the active path (the branches the
    person chose, ``conversations.branches``), or every branch with ``all_branches``."""
    messages = conversation.messages.all() if all_branches else conversation.messages.filter(hidden=False)
    qs = messages.select_related("agent").order_by("seq", "created_at")
    if after_seq is not None:
        qs = qs.filter(seq__gt=after_seq)
    if limit is not None:
        # the most recent `limit`, still returned oldest first
        recent = list(messages.order_by("-seq", "-created_at").values_list("pk", flat=True)[:limit])
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


def conversation_list_with_agents(*, user: Any) -> QuerySet[Conversation]:
    """``conversation_list`` with each conversation's participants and agents prefetched."""
    participants = Participant.objects.select_related("agent").order_by("position")
    return conversation_list(user=user).prefetch_related(Prefetch("participants", queryset=participants))
