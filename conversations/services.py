"""Writes of conversations and messages. REST, WebSocket, SSE and admin all call these."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import orjson
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone

from agents.models import AGENT_EDITABLE_FIELDS, Agent, AgentStatus
from agents.preferences import MAX_MODEL_CHARS, TEMPERATURE_RANGE, agent_allowed_models
from agents.selectors import agent_get_for_user
from agents.services import _SECRET_HINTS, agent_create_for_user, storable_json_validate
from conversations.models import (
    Conversation,
    ConversationStatus,
    DoubleTextPolicy,
    Message,
    MessageRole,
    Opinion,
    Participant,
    SessionType,
)
from conversations.selectors import conversation_participants
from conversations.text import title_from_message
from core.errors import AgentUnavailable, NotFound, TooLarge, ValidationFailed

logger = logging.getLogger("nexus.conversations")

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
    # The session's preferences (seed 004): applied to each run where its agent allows them
    # (agents.preferences); their values are checked here, whether an agent allows them there.
    model = raw.get("model")
    if model is not None:
        if not isinstance(model, str) or not model.strip() or len(model) > MAX_MODEL_CHARS:
            errors["model"] = [f"A model name of 1 to {MAX_MODEL_CHARS} characters."]
        else:
            cleaned["model"] = model.strip()
    temperature = raw.get("temperature")
    if temperature is not None:
        low, high = TEMPERATURE_RANGE
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not low <= temperature <= high
        ):
            errors["temperature"] = [f"A number from {low:g} to {high:g}."]
        else:
            cleaned["temperature"] = float(temperature)
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
        "model",
        "temperature",
    }
    for name in sorted(unknown):
        errors[name] = ["Unknown setting."]
    if errors:
        raise ValidationFailed("Invalid settings.", details={"settings": errors})
    if session_type == SessionType.AGENT_AGENT:
        cleaned.setdefault("max_turns", MAX_TURNS_DEFAULT)
    return cleaned


def conversation_context_validate(context: Any) -> dict[str, Any]:
    """A conversation's whole ``context``: an object of at most ``NEXUS_MAX_CONTEXT_BYTES`` as
    compact JSON (a quota: ``TooLarge``, 413 ``message_too_large``). Checked on create and on
    every merge (``initialize``, ``user_message``), on the merged result."""
    if not isinstance(context, dict):
        raise ValidationFailed("context must be an object.", details={"context": ["Expected an object."]})
    limit = django_settings.NEXUS_MAX_CONTEXT_BYTES
    try:
        size = len(orjson.dumps(context))
    except TypeError:
        raise ValidationFailed("context must be JSON.", details={"context": ["Not JSON."]}) from None
    if size > limit:
        raise TooLarge(
            f"The conversation context is larger than {limit} bytes.",
            details={"context": [f"At most {limit} bytes of JSON."]},
        )
    return context


@transaction.atomic
def conversation_create(
    *,
    owner: Any,
    participants: Sequence[tuple[Agent, str]],
    session_type: str = SessionType.HUMAN_AGENT,
    title: str = "",
    context: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    client_session_id: str | None = None,
    conversation_id: uuid.UUID | None = None,
) -> Conversation:
    """Create a conversation with its agents in speaking order, each with a role.
    ``client_session_id``: the id the client chose for it (unique per owner); ``conversation_id``:
    its id, chosen by the caller (e.g. derived from an AG-UI thread id)."""
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
    if context is not None:
        conversation_context_validate(context)
    if len(title or "") > 200:
        raise ValidationFailed("Title too long.", details={"title": ["At most 200 characters."]})
    cleaned_settings = conversation_settings_validate(settings, session_type=session_type)
    if "model" in cleaned_settings:
        _preferred_model_check(cleaned_settings["model"], [agent for agent, _ in participants])
    conversation = Conversation.objects.create(
        id=conversation_id or uuid.uuid4(),
        owner=owner,
        session_type=session_type,
        title=(title or "").strip(),
        context=context or {},
        settings=cleaned_settings,
        expires_at=timezone.now() + timedelta(seconds=django_settings.NEXUS_CONVERSATION_IDLE_SECONDS),
        client_session_id=client_session_id or None,
    )
    Participant.objects.bulk_create(
        Participant(conversation=conversation, agent=agent, role=role or "primary", position=index)
        for index, (agent, role) in enumerate(participants)
    )
    return conversation


def conversation_preferences_set(*, conversation: Conversation, preferences: dict[str, Any]) -> Conversation:
    """Store a session's ``model``/``temperature`` preferences in its settings (None: unchanged).

    A model none of the conversation's agents allows is refused (``validation_error`` naming the
    models they allow), never stored to be silently ignored; each run then applies what its own
    agent allows (``agents.preferences``)."""
    chosen = {k: preferences[k] for k in ("model", "temperature") if preferences.get(k) is not None}
    if not chosen:
        return conversation
    merged = conversation_settings_validate(
        {**(conversation.settings or {}), **chosen}, session_type=conversation.session_type
    )
    if chosen.get("model") is not None:
        _preferred_model_check(merged["model"], conversation_participants(conversation=conversation))
    conversation.settings = merged
    conversation.save(update_fields=["settings", "updated_at"])
    return conversation


def _preferred_model_check(model: str, agents: Sequence[Agent]) -> None:
    """A session's preferred model must be one at least one of its agents allows."""
    allowed = list(dict.fromkeys(m for agent in agents for m in agent_allowed_models(agent)))
    if model not in allowed:
        raise ValidationFailed(
            "This model is not allowed for this session's agent.",
            details={"preferences": {"model": [f"One of: {', '.join(allowed)}."]}, "allowed_models": allowed},
        )


def conversation_rename(*, conversation: Conversation, title: str) -> Conversation:
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise ValidationFailed("Invalid title.", details={"title": ["1 to 200 characters."]})
    conversation.title = title
    conversation.save(update_fields=["title", "updated_at"])
    return conversation


def conversation_update(
    *,
    conversation: Conversation,
    title: str | None = None,
    pinned: bool | None = None,
    archived: bool | None = None,
) -> Conversation:
    """A person's changes: a title of their own, pinned, archived (None: unchanged)."""
    fields = ["updated_at"]
    if title is not None:
        title = title.strip()
        if not title or len(title) > 200:
            raise ValidationFailed("Invalid title.", details={"title": ["1 to 200 characters."]})
        conversation.title = title
        fields.append("title")
    if pinned is not None:
        conversation.pinned = bool(pinned)
        fields.append("pinned")
    if archived is not None:
        conversation.archived = bool(archived)
        fields.append("archived")
    conversation.save(update_fields=fields)
    return conversation


@transaction.atomic
def conversation_agent_set(*, conversation: Conversation, agent: Agent) -> Conversation:
    """Make ``agent`` the one who answers a person's messages from now on: the conversation's primary
    participant (position 0). The history stays; each stored reply keeps the agent that wrote it.

    An agent already in the conversation swaps places with the primary; any other takes the
    primary's place (the old primary leaves the conversation). The caller checks that the user may
    use ``agent``. Agent-to-agent sessions keep their agents; a paused or failing agent cannot answer.
    """
    if conversation.session_type != SessionType.HUMAN_AGENT:
        raise ValidationFailed(
            "An agent-to-agent session keeps its agents.",
            details={"agent_id": ["Only a person-to-agent conversation changes who answers."]},
        )
    if agent.status in (AgentStatus.PAUSED, AgentStatus.ERROR):
        raise AgentUnavailable(f"{agent.name} is {agent.status}.")
    # Locked like a send (runs.selectors.conversation_for_send), so a send sees the old or the new one.
    Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
    rows = list(Participant.objects.filter(conversation=conversation).order_by("position"))
    if not rows:  # a conversation always has an agent; this one lost its only one (deleted)
        Participant.objects.create(conversation=conversation, agent=agent, role="primary", position=0)
        return conversation
    primary = rows[0]
    if primary.agent_id == agent.pk:
        return conversation
    other = next((row for row in rows if row.agent_id == agent.pk), None)
    old_agent_id = primary.agent_id
    if other is not None:  # swap: each keeps its position's role
        position, role = other.position, other.role
        other.delete()
        primary.agent = agent
        primary.save(update_fields=["agent"])
        Participant.objects.create(
            conversation=conversation, agent_id=old_agent_id, role=role, position=position
        )
    else:
        primary.agent = agent
        primary.save(update_fields=["agent"])
    logger.info("conversation %s: agent %s answers instead of %s", conversation.pk, agent.pk, old_agent_id)
    return conversation


HISTORY_SEED_LIMIT = 50  # the newest turns a client may bring along into a new conversation


def conversation_history_seed(*, conversation: Conversation, agent: Agent, history: Sequence[Any]) -> int:
    """Earlier turns a client brings along into a conversation it starts (invoke's and seed 002's
    ``history``, AG-UI's ``messages``): the newest ``HISTORY_SEED_LIMIT``, each ``{role: user |
    assistant, content}``, stored as its past, each following the one before (the message tree).
    They carry no seq (they were never events of its log, which begins at the request's own
    message); the history reads them first. The number stored."""
    items = list(history)[-HISTORY_SEED_LIMIT:]
    parent: Message | None = None
    for item in items:
        parent = Message.objects.create(
            conversation=conversation,
            role=MessageRole.USER if item["role"] == "user" else MessageRole.AGENT,
            agent=agent if item["role"] == "assistant" else None,
            content=item["content"],
            parent=parent,
        )
    return len(items)


def conversation_delete(*, conversation: Conversation) -> None:
    conversation.delete()


def conversation_idle_expiry() -> Any:
    """When a conversation active now expires if nothing else happens in it."""
    return timezone.now() + timedelta(seconds=django_settings.NEXUS_CONVERSATION_IDLE_SECONDS)


def conversation_revive(conversation: Conversation) -> bool:
    """A person came back to an expired conversation (a message, a regenerate, a continue): it is
    active again, with a fresh idle expiry. False when it was not expired."""
    if conversation.status != ConversationStatus.EXPIRED:
        return False
    conversation.status = ConversationStatus.ACTIVE
    conversation.expires_at = conversation_idle_expiry()
    conversation.save(update_fields=["status", "updated_at", "expires_at"])
    return True


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


# --- creation from a client's request (REST, WebSocket `initialize`) ---------------------------

# An inline agent (seed 001 AgentConfig) takes an agent's fields but its status, plus metadata.
INLINE_AGENT_FIELDS = (frozenset(AGENT_EDITABLE_FIELDS) - {"status"}) | {"metadata"}
MAX_PARTICIPANTS = 10
_LIST_ROLES = ("primary", "secondary")


def _role_for_position(position: int) -> str:
    return _LIST_ROLES[position] if position < len(_LIST_ROLES) else f"participant_{position + 1}"


def conversation_agent_specs(agents: Any) -> list[tuple[str, dict[str, Any]]]:
    """Normalise the ``agents`` of a create request into ``[(role, spec)]`` in speaking order.

    ``agents`` is a list of agent ids (roles primary, secondary, participant_3...) or the seed-001
    mapping ``{role: {"agent_id": id} | {inline agent config}}``.
    """
    if isinstance(agents, list):
        specs = [(_role_for_position(i), {"agent_id": value}) for i, value in enumerate(agents)]
    elif isinstance(agents, dict):
        specs = []
        for role, value in agents.items():
            if not isinstance(role, str) or not role.strip() or len(role) > 32:
                raise ValidationFailed(
                    "Invalid role.", details={"agents": [f"{role!r}: 1 to 32 characters."]}
                )
            if isinstance(value, str):
                value = {"agent_id": value}
            if not isinstance(value, dict):
                raise ValidationFailed(
                    "Invalid agent.", details={"agents": [f"{role}: an agent_id or an agent config."]}
                )
            specs.append((role.strip(), value))
    else:
        raise ValidationFailed(
            "Invalid agents.", details={"agents": ["A list of agent ids, or {role: agent} objects."]}
        )
    if not specs:
        raise ValidationFailed("A conversation needs an agent.", details={"agents": ["At least one agent."]})
    if len(specs) > MAX_PARTICIPANTS:
        raise ValidationFailed(
            "Too many agents.", details={"agents": [f"At most {MAX_PARTICIPANTS} agents."]}
        )
    return specs


def _no_secrets(value: Any, *, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if any(hint in str(key).lower() for hint in _SECRET_HINTS):
                raise ValidationFailed(
                    "Secrets are never stored in agents.",
                    details={"agents": [f"{where}.{key}: put secrets in the environment."]},
                )
            _no_secrets(item, where=f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _no_secrets(item, where=where)


def _agent_from_spec(*, owner: Any, role: str, spec: dict[str, Any]) -> Agent:
    if "agent_id" in spec:
        if len(spec) > 1:
            raise ValidationFailed(
                "Invalid agent.", details={"agents": [f"{role}: agent_id or an inline config, not both."]}
            )
        try:
            return agent_get_for_user(user=owner, agent_id=spec["agent_id"])
        except NotFound:
            raise ValidationFailed(
                "Unknown agent.", details={"agents": [f"{role}: agent {spec['agent_id']} not found."]}
            ) from None
    unknown = set(spec) - INLINE_AGENT_FIELDS
    if unknown:
        raise ValidationFailed(
            "Unknown agent fields.",
            details={"agents": [f"{role}: unknown field {name}." for name in sorted(unknown)]},
        )
    if not spec.get("provider") or not spec.get("model"):
        raise ValidationFailed(
            "An inline agent needs a provider and a model.",
            details={"agents": [f"{role}: provider and model are required."]},
        )
    fields = {key: value for key, value in spec.items() if key != "metadata"}
    if "metadata" in spec:
        if not isinstance(spec["metadata"], dict):
            raise ValidationFailed("Invalid metadata.", details={"agents": [f"{role}.metadata: an object."]})
        _no_secrets(spec["metadata"], where=f"{role}.metadata")
        fields["config"] = {**(fields.get("config") or {}), "metadata": spec["metadata"]}
    fields.setdefault("name", f"{role.replace('_', ' ').title()} ({spec['provider']} {spec['model']})"[:120])
    try:
        # As for POST /api/agents/: only staff choose an inline agent's base_url or api_key_env.
        return agent_create_for_user(user=owner, **fields)
    except ValidationFailed as exc:
        details = exc.details if isinstance(exc.details, dict) else {}
        messages = [f"{role}.{field}: {msg}" for field, msgs in details.items() for msg in _flat(msgs)]
        raise ValidationFailed(
            exc.message, details={"agents": messages or [f"{role}: {exc.message}"]}
        ) from None


def _flat(messages: Any) -> list[str]:
    if isinstance(messages, list | tuple):
        return [str(item) for item in messages]
    if isinstance(messages, dict):
        return [f"{key}: {item}" for key, values in messages.items() for item in _flat(values)]
    return [str(messages)]


@transaction.atomic
def conversation_create_for_user(
    *,
    owner: Any,
    agents: Any,
    session_type: str = SessionType.HUMAN_AGENT,
    title: str = "",
    context: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> Conversation:
    """Create a conversation from a client's request: agents by id (ones the owner may use) or as
    inline configs (new agents owned by ``owner``), all in one transaction."""
    for name, value in (("agents", agents), ("title", title), ("context", context), ("settings", settings)):
        storable_json_validate(value, field=name)
    participants = [
        (_agent_from_spec(owner=owner, role=role, spec=spec), role)
        for role, spec in conversation_agent_specs(agents)
    ]
    return conversation_create(
        owner=owner,
        participants=participants,
        session_type=session_type,
        title=title,
        context=context,
        settings=settings,
    )


# --- titles ----------------------------------------------------------------------------------

TITLE_MAX_WORDS = 8
TITLE_MAX_CHARS = 80
TITLE_SOURCE_MESSAGES = 6
TITLE_SYSTEM_PROMPT = (
    "You write short titles for conversations. Reply with the title only: at most six words, "
    "no quotes, no final punctuation."
)


def title_clean(raw: str) -> str:
    """A model's answer as a title: its first line, without quotes, a 'Title:' label or final dots."""
    line = next((line.strip() for line in (raw or "").splitlines() if line.strip()), "")
    if line.lower().startswith("title:"):
        line = line[len("title:") :].strip()
    line = line.strip("\"'`*#“”‘’ ").rstrip(".!?:;,")
    words = line.split()[:TITLE_MAX_WORDS]
    return " ".join(words)[:TITLE_MAX_CHARS].strip()


def title_fallback(messages: Sequence[Message]) -> str:
    """The first sentence of the first user message with text (``title_from_message``), or of
    the first message with text at all."""
    for candidates in (
        (m for m in messages if m.role == "user"),
        iter(messages),
    ):
        for message in candidates:
            title = title_from_message(message.content)
            if title:
                return title
    return ""


def conversation_title_untitled(*, conversation: Conversation) -> tuple[str, str]:
    """The automatic title after the first exchange: an untitled conversation gets the first
    sentence of its first user message (``title_from_message``; no provider is asked, so it is
    instant and costs no run). A title already there, the person's own or an earlier automatic one,
    is kept. Returns ``(title, source)``, source ``"first_message"`` or ``"kept"``.

    The write is conditional (``WHERE title = ''``): a rename that lands meanwhile wins.
    """
    if conversation.title:
        return conversation.title, "kept"
    messages = list(
        conversation.messages.filter(role="user", type="message")
        .exclude(content="")
        .order_by("seq", "created_at")[:5]
    )
    title = title_fallback(messages)
    if not title:
        raise ValidationFailed(
            "Nothing to title yet.", details={"conversation": ["No message of yours with text yet."]}
        )
    written = Conversation.objects.filter(pk=conversation.pk, title="").update(
        title=title, updated_at=timezone.now()
    )
    if not written:
        conversation.refresh_from_db(fields=["title"])
        return conversation.title, "kept"
    conversation.title = title
    return title, "first_message"


def title_prompt(messages: Sequence[Message]) -> list[tuple[str, str]]:
    """``[(role, content)]`` asking for a title of these messages (roles system/user)."""
    lines = []
    for message in messages:
        speaker = "User" if message.role == "user" else "Assistant"
        lines.append(f"{speaker}: {message.content.strip()[:1000]}")
    transcript = "\n".join(lines)
    return [("system", TITLE_SYSTEM_PROMPT), ("user", f"Conversation:\n{transcript}\n\nTitle:")]


def conversation_generate_title(
    *, conversation: Conversation, complete: Callable[[Agent, list[tuple[str, str]]], str] | None
) -> tuple[str, str]:
    """Title a conversation from its first messages (on the active branch) and save it. Returns
    ``(title, source)``.

    ``complete(agent, prompt)`` asks the conversation's first agent (the caller wires the provider
    in, so this module never talks to one); when it fails (raises) or answers nothing usable, the
    title is the first words of the first user message (source ``"fallback"``).
    """
    messages = [
        m
        for m in conversation.messages.filter(hidden=False).order_by("seq", "created_at")[:50]
        if m.role in {"user", "agent"} and m.type == "message" and m.content.strip()
    ][:TITLE_SOURCE_MESSAGES]
    if not messages:
        raise ValidationFailed(
            "Nothing to title yet.", details={"conversation": ["The conversation has no messages yet."]}
        )
    title, source = "", "fallback"
    agents = conversation_participants(conversation=conversation)
    if complete is not None and agents:
        try:
            title = title_clean(complete(agents[0], title_prompt(messages)))
            source = "provider"
        except Exception as exc:  # a provider failure of any kind falls back to the first words
            # provider messages are safe to log (no secrets, no message contents)
            logger.info(
                "title generation fell back: %s %s", exc.__class__.__name__, getattr(exc, "message", "")
            )
            title = ""
    if not title:
        title, source = title_fallback(messages), "fallback"
    conversation_rename(conversation=conversation, title=title)
    return title, source
