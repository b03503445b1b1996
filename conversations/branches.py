"""The message tree: where a new message hangs, which branch is active, and its siblings.

A person's message or a reply has a ``parent`` (the message it follows); messages with the same
parent and role are siblings (a regenerated reply, an edited message). Among siblings one is
``selected`` (the newest, unless the person flips); a message is ``hidden`` when it or an ancestor
is not selected, and a tool call or result is hidden with its run's reply. ``hidden`` is stored
(recomputed here after every change of the tree) so that the provider's history and the listings
read the active path with one condition.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import F

from conversations.models import Conversation, Message, MessageRole, MessageType
from core.errors import NotFound, ValidationFailed, parse_uuid

TURN_ROLES = (MessageRole.USER, MessageRole.AGENT, MessageRole.SYSTEM)


def message_tip(*, conversation_id: Any) -> Any:
    """The id of the last message on the active path (a new message's parent), or None."""
    return (
        Message.objects.filter(
            conversation_id=conversation_id, hidden=False, type=MessageType.MESSAGE, role__in=TURN_ROLES
        )
        # a message whose seq is not stored yet is the newest (its send is still announcing it)
        .order_by(F("seq").desc(nulls_first=True), "-created_at")
        .values_list("pk", flat=True)
        .first()
    )


def is_turn(message: Message) -> bool:
    return message.type == MessageType.MESSAGE and message.role in TURN_ROLES


def siblings_deselect(*, message: Message) -> None:
    """``message`` is about to get a new sibling (chosen at once): it and its siblings step back."""
    siblings_of(message).update(selected=False)


def siblings_of(message: Message) -> Any:
    """The messages with ``message``'s parent and role (``message`` included), oldest first."""
    qs = Message.objects.filter(
        conversation_id=message.conversation_id,
        parent_id=message.parent_id,
        role=message.role,
        type=MessageType.MESSAGE,
    )
    return qs.order_by("created_at", "seq")


def hidden_recompute(*, conversation_id: Any) -> None:
    """Store ``hidden`` for every message of the conversation from the tree and the selections."""
    rows = list(
        Message.objects.filter(conversation_id=conversation_id).values_list(
            "pk", "parent_id", "selected", "type", "role", "metadata"
        )
    )
    parent = {pk: parent_id for pk, parent_id, *_ in rows}
    selected = {pk: chosen for pk, _, chosen, *_ in rows}
    memo: dict[Any, bool] = {}

    def off_path(pk: Any) -> bool:
        chain = []
        while pk is not None and pk not in memo:
            chain.append(pk)
            pk = parent.get(pk)
        value = memo.get(pk, False) if pk is not None else False
        for item in reversed(chain):
            value = value or not selected[item]
            memo[item] = value
        return value

    reply_of_run: dict[str, Any] = {}
    for pk, _, _, kind, role, metadata in rows:
        if kind == MessageType.MESSAGE and role == MessageRole.AGENT and (metadata or {}).get("run_id"):
            reply_of_run[metadata["run_id"]] = pk
    hide, show = [], []
    for pk, _, _, kind, role, metadata in rows:
        if kind == MessageType.MESSAGE and role in TURN_ROLES:
            off = off_path(pk)
        else:  # a tool call or result: with its run's reply
            reply = reply_of_run.get(str((metadata or {}).get("run_id")))
            off = off_path(reply) if reply is not None else False
        (hide if off else show).append(pk)
    if hide:
        Message.objects.filter(pk__in=hide, hidden=False).update(hidden=True)
    if show:
        Message.objects.filter(pk__in=show, hidden=True).update(hidden=False)


@transaction.atomic
def message_select(*, message: Message) -> Message:
    """Make ``message`` the chosen one among its siblings (the ``< 1/2 >`` flip), and each of its
    ancestors among theirs: the active path goes through it."""
    if not is_turn(message):
        raise ValidationFailed(
            "Only a message or a reply can be chosen.", details={"message_id": ["Not a turn."]}
        )
    Conversation.objects.select_for_update().filter(pk=message.conversation_id).first()
    node: Message | None = message
    seen: set[Any] = set()
    while node is not None and node.pk not in seen:
        seen.add(node.pk)
        siblings_of(node).exclude(pk=node.pk).update(selected=False)
        Message.objects.filter(pk=node.pk).update(selected=True)
        node = node.parent
    hidden_recompute(conversation_id=message.conversation_id)
    message.refresh_from_db()
    return message


@dataclass(frozen=True, slots=True)
class Siblings:
    ids: list[str]

    def index_of(self, message_id: Any) -> int:
        return self.ids.index(str(message_id)) if str(message_id) in self.ids else 0


def siblings_for(messages: list[Message]) -> dict[Any, Siblings]:
    """For each turn message listed: its siblings' ids, oldest first (itself included)."""
    turns = [m for m in messages if is_turn(m)]
    if not turns:
        return {}
    conversation_ids = {m.conversation_id for m in turns}
    groups: dict[tuple[Any, Any, str], list[str]] = defaultdict(list)
    keys = {(m.conversation_id, m.parent_id, m.role) for m in turns}
    parents = {parent for _, parent, _ in keys}
    rows = (
        Message.objects.filter(conversation_id__in=conversation_ids, type=MessageType.MESSAGE)
        .filter(parent_id__in=[p for p in parents if p is not None])
        .values_list("pk", "conversation_id", "parent_id", "role")
        .order_by("created_at", "seq")
    )
    for pk, conversation_id, parent_id, role in rows:
        groups[(conversation_id, parent_id, role)].append(str(pk))
    if None in parents:
        roots = (
            Message.objects.filter(
                conversation_id__in=conversation_ids,
                type=MessageType.MESSAGE,
                parent__isnull=True,
                role__in=TURN_ROLES,
            )
            .values_list("pk", "conversation_id", "role")
            .order_by("created_at", "seq")
        )
        for pk, conversation_id, role in roots:
            groups[(conversation_id, None, role)].append(str(pk))
    result = {}
    for m in turns:
        ids = groups.get((m.conversation_id, m.parent_id, m.role)) or [str(m.pk)]
        result[m.pk] = Siblings(ids if str(m.pk) in ids else [str(m.pk)])
    return result


def message_get_in(*, conversation: Conversation, message_id: Any) -> Message:
    """A message of this conversation (NotFound otherwise)."""
    pk = parse_uuid(message_id, what="Message")
    message = conversation.messages.filter(pk=pk).first()
    if message is None:
        raise NotFound("Message not found.")
    return message
