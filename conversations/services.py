"""Writes of conversations and messages. REST, WebSocket, SSE and admin all call these."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from agents.models import Agent
from conversations.models import (
    Conversation,
    ConversationStatus,
    DoubleTextPolicy,
    Message,
    Opinion,
    Participant,
    SessionType,
)
from nexus.errors import ValidationFailed

MAX_TURNS_DEFAULT = 10
MAX_TURNS_CAP = 100


def conversation_settings_validate(raw: Any, *, session_type: str) -> dict[str, Any]:
    """Normalise a conversation's settings; refuse values no session could honour."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValidationFailed("settings must be an object.", details={"settings": ["Expected an object."]})
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}

    def integer(name: str, low: int, high: int) -> None:
        value = raw.get(name)
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors[name] = [f"An integer from {low} to {high}."]
        else:
            cleaned[name] = value

    integer("max_turns", 1, MAX_TURNS_CAP)
    integer("token_budget", 1, 10_000_000)
    cooldown = raw.get("cooldown_seconds")
    if cooldown is not None:
        if isinstance(cooldown, bool) or not isinstance(cooldown, int | float) or not 0 <= cooldown <= 3600:
            errors["cooldown_seconds"] = ["A number of seconds from 0 to 3600."]
        else:
            cleaned["cooldown_seconds"] = float(cooldown)
    for name, limit in (("goal", 4000), ("termination_phrase", 200), ("opening_message", 20_000)):
        value = raw.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            errors[name] = [f"A string of at most {limit} characters."]
        elif value.strip():
            cleaned[name] = value.strip()
    policy = raw.get("double_text", DoubleTextPolicy.ENQUEUE)
    if policy not in DoubleTextPolicy.values:
        errors["double_text"] = [f"One of {', '.join(DoubleTextPolicy.values)}."]
    else:
        cleaned["double_text"] = policy
    unknown = set(raw) - {
        "max_turns",
        "token_budget",
        "cooldown_seconds",
        "goal",
        "termination_phrase",
        "opening_message",
        "double_text",
    }
    for name in sorted(unknown):
        errors[name] = ["Unknown setting."]
    if errors:
        raise ValidationFailed("Invalid settings.", details={"settings": errors})
    if session_type == SessionType.AGENT_AGENT:
        cleaned.setdefault("max_turns", MAX_TURNS_DEFAULT)
    return cleaned


@transaction.atomic
def conversation_create(
    *,
    owner: Any,
    participants: Sequence[tuple[Agent, str]],
    session_type: str = SessionType.HUMAN_AGENT,
    title: str = "",
    context: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> Conversation:
    """Create a conversation with its agents in speaking order, each with a role."""
    if session_type not in SessionType.values:
        raise ValidationFailed(
            "Invalid session type.", details={"session_type": [f"One of {SessionType.values}."]}
        )
    if not participants:
        raise ValidationFailed("A conversation needs an agent.", details={"agents": ["At least one agent."]})
    if session_type == SessionType.AGENT_AGENT and len(participants) < 2:
        raise ValidationFailed(
            "An agent-to-agent session needs two or more agents.",
            details={"agents": ["At least two agents."]},
        )
    if len({agent.pk for agent, _ in participants}) != len(participants):
        raise ValidationFailed("An agent is listed twice.", details={"agents": ["Each agent once."]})
    if context is not None and not isinstance(context, dict):
        raise ValidationFailed("context must be an object.", details={"context": ["Expected an object."]})
    if len(title or "") > 200:
        raise ValidationFailed("Title too long.", details={"title": ["At most 200 characters."]})
    conversation = Conversation.objects.create(
        owner=owner,
        session_type=session_type,
        title=(title or "").strip(),
        context=context or {},
        settings=conversation_settings_validate(settings, session_type=session_type),
        expires_at=timezone.now() + timedelta(seconds=django_settings.NEXUS_CONVERSATION_IDLE_SECONDS),
    )
    Participant.objects.bulk_create(
        Participant(conversation=conversation, agent=agent, role=role or "primary", position=index)
        for index, (agent, role) in enumerate(participants)
    )
    return conversation


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise ValidationFailed("Invalid title.", details={"title": ["1 to 200 characters."]})
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_touch(*, conversation_id: Any) -> None:
    """Push the idle expiry forward after activity."""
    Conversation.objects.filter(pk=conversation_id, status=ConversationStatus.ACTIVE).update(
        updated_at=timezone.now(),
        expires_at=timezone.now() + timedelta(seconds=django_settings.NEXUS_CONVERSATION_IDLE_SECONDS),
    )


def message_feedback(*, message: Message, rating: str | None, comment: str = "") -> Message:
    """Record a person's opinion of a message (positive, negative, or cleared with None)."""
    if rating is not None and rating not in Opinion.values:
        raise ValidationFailed("Invalid rating.", details={"rating": ["positive, negative or null."]})
    if comment is not None and (not isinstance(comment, str) or len(comment) > 4000):
        raise ValidationFailed(
            "Invalid comment.", details={"comment": ["A string of at most 4000 characters."]}
        )
    message.opinion = rating
    message.feedback_comment = comment or ""
    message.save(update_fields=["opinion", "feedback_comment", "updated_at"])
    return message
