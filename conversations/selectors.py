"""Reads of conversations and messages, and the one access rule for them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, F, OuterRef, Prefetch, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce, Left

from conversations.models import Conversation, Message, MessageRole, MessageType, Participant
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


def conversation_for_client_session(*, user: Any, client_session_id: str) -> Conversation | None:
    """The user's own conversation a client named ``client_session_id`` (seed 004's
    ``sessionId``), else None. Only the user's: another user's id of the same name is theirs."""
    return (
        Conversation.objects.select_related("owner")
        .filter(owner_id=user.pk, client_session_id=client_session_id)
        .first()
    )


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


# What the sidebar summarises: what the person and the agents said (not tool calls, not notes).
_SPOKEN = Q(role__in=[MessageRole.USER, MessageRole.AGENT], type=MessageType.MESSAGE)
# The preview is cut to 100 characters of plain text; the database hands over no more than this.
_PREVIEW_SOURCE_CHARS = 400
SEARCH_MAX_CHARS = 200


def with_activity(qs: QuerySet[Conversation]) -> QuerySet[Conversation]:
    """Annotate ``last_message_at`` (the newest spoken message's time, None before the first) and
    ``preview_source`` (the start of the newest spoken message with text), one subquery each."""
    spoken = Message.objects.filter(_SPOKEN, conversation=OuterRef("pk")).order_by("-created_at")
    return qs.annotate(
        last_message_at=Subquery(spoken.values("created_at")[:1]),
        preview_source=Subquery(
            spoken.exclude(content="")
            .annotate(start=Left("content", _PREVIEW_SOURCE_CHARS))
            .values("start")[:1]
        ),
    )


def conversation_list_with_agents(
    *, user: Any, search: str = "", archived: bool = False
) -> QuerySet[Conversation]:
    """The sidebar's list: pinned first, then by last activity (the newest message, or creation
    when there is none yet), with each conversation's participants prefetched.

    ``archived`` lists the archived ones instead of the others. ``search`` keeps conversations whose
    title or any message contains it, case-insensitively (``icontains``: ``UPPER() LIKE`` on
    PostgreSQL; on SQLite ``LIKE``, which folds ASCII letters only). A scan, fine for one person's
    conversations; a full-text index would be the next step at a larger scale.
    """
    participants = Participant.objects.select_related("agent").order_by("position")
    qs = with_activity(conversation_queryset_for_user(user).filter(archived=archived))
    search = (search or "").strip()[:SEARCH_MAX_CHARS]
    if search:
        in_messages = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=search)
        qs = qs.filter(Q(title__icontains=search) | Exists(in_messages))
    return qs.order_by(
        F("pinned").desc(), Coalesce("last_message_at", "created_at").desc(), "-created_at"
    ).prefetch_related(Prefetch("participants", queryset=participants))


def conversation_get_with_activity(*, user: Any, conversation_id: Any) -> Conversation:
    """``conversation_get_for_user`` with ``last_message_at`` and ``preview_source`` annotated."""
    pk = parse_uuid(conversation_id, what="Conversation")
    try:
        return with_activity(conversation_queryset_for_user(user)).get(pk=pk)
    except Conversation.DoesNotExist:
        raise NotFound("Conversation not found.") from None
