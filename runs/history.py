"""A conversation's stored messages, as the provider-neutral chat history one agent sees."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import connection

from agents.models import Agent
from conversations.models import Conversation, Message, MessageRole, MessageStatus, MessageType
from providers.base import ChatMessage, ProviderError, ToolCall
from providers.tokens import TokenCounter

HISTORY_LIMIT = 60
USABLE_STATUSES = (MessageStatus.COMPLETE, MessageStatus.STOPPED, MessageStatus.INCOMPLETE)
# What a run that continues a reply cut by length (its trigger is that reply) is asked after it.
CONTINUE_PROMPT = (
    "Your previous reply was cut off. Continue it exactly where it stopped, without repeating "
    "anything and without any preamble."
)


def _system_prompt(agent: Agent, conversation: Conversation, speakers: Sequence[Agent]) -> str:
    parts = [agent.system_prompt.strip()]
    if agent.personality.strip():
        parts.append(f"Personality: {agent.personality.strip()}")
    settings = conversation.settings or {}
    if conversation.session_type == "agent_agent":
        others = [a.name for a in speakers if a.pk != agent.pk]
        parts.append(
            f"You are {agent.name}, in a conversation with {', '.join(others) or 'another agent'}. "
            "Reply with your next turn only."
        )
        if settings.get("goal"):
            parts.append(f"Goal of the conversation: {settings['goal']}")
        if settings.get("termination_phrase"):
            parts.append(f"When the goal is reached, say exactly: {settings['termination_phrase']}")
    if conversation.context:
        parts.append("Context: " + json.dumps(conversation.context, ensure_ascii=False)[:4000])
    return "\n\n".join(p for p in parts if p)


def chat_history(
    *,
    conversation: Conversation,
    agent: Agent,
    exclude_message_id: Any = None,
    then: Message | None = None,
    speakers: Sequence[Agent] | None = None,
) -> list[ChatMessage]:
    """The last messages of the conversation from ``agent``'s point of view.

    Its own turns are ``assistant``; people's messages are ``user``. When agents talk (agent_agent),
    other agents' turns are ``user`` prefixed with the speaker's name (each agent sees the others as
    the other party); in a person's chat every agent reply is ``assistant`` (one assistant side).
    ``then``: the message the run answers, taken as given (not read back) and placed by its ``seq``,
    at the end when it has none yet: stored in the same transaction, or its seq not stored yet.
    """
    multi_agent = conversation.session_type == "agent_agent"
    if speakers is None or multi_agent:
        speakers = list(conversation.agents.all()) if multi_agent else [agent]
    excluded = [pk for pk in (exclude_message_id, then.pk if then is not None else None) if pk is not None]
    rows = _recent_messages(conversation.pk, excluded)
    rows.reverse()
    if then is not None:
        rows = _placed(rows, then)
    names = {a.pk: a.name for a in speakers}
    history: list[ChatMessage] = []
    system = _system_prompt(agent, conversation, speakers)
    if system:
        history.append(ChatMessage(role="system", content=system))
    for message in rows:
        history.extend(_as_chat(message, agent=agent, multi_agent=multi_agent, names=names))
    if not multi_agent and then is not None and then.role == MessageRole.AGENT and then.agent_id == agent.pk:
        # A continuation: the cut reply is the last assistant turn, then the instruction.
        history.append(ChatMessage(role="user", content=CONTINUE_PROMPT))
    return history


def _placed(rows: list[Message], message: Message) -> list[Message]:
    if message.seq is None:
        return [*rows, message]
    later = next((i for i, row in enumerate(rows) if row.seq is None or row.seq > message.seq), len(rows))
    if later == 0 and len(rows) >= HISTORY_LIMIT:
        return rows  # older than the whole window
    return [*rows[:later], message, *rows[later:]]


# Only the columns a history needs, no join (speakers' names come from ``speakers``), in SQL written
# once: this read is on the path to the provider's request (time to first token), where the ORM's
# query compiler cost about 0.4 ms of Python.
_HISTORY_COLUMNS = (
    "id",
    "conversation_id",
    "agent_id",
    "role",
    "type",
    "content",
    "metadata",
    "seq",
    "created_at",
)
_HISTORY_SQL: dict[tuple[str, int], str] = {}


def _recent_messages(conversation_id: Any, excluded: list[Any]) -> list[Message]:
    key = (connection.vendor, len(excluded))
    sql = _HISTORY_SQL.get(key)
    if sql is None:
        q = connection.ops.quote_name
        usable = ", ".join(["%s"] * len(USABLE_STATUSES))
        sql = (
            f"SELECT {', '.join(q(c) for c in _HISTORY_COLUMNS)} FROM {q(Message._meta.db_table)}"
            f" WHERE {q('conversation_id')} = %s AND ({q('status')} IN ({usable}) OR {q('type')} = %s)"
            # the active path only: branches the person stepped away from are not sent
            f" AND {q('hidden')} = %s"
            + "".join(f" AND {q('id')} <> %s" for _ in excluded)
            + f" ORDER BY {q('seq')} DESC, {q('created_at')} DESC LIMIT {HISTORY_LIMIT}"
        )
        _HISTORY_SQL[key] = sql
    prep = Message._meta.pk.get_db_prep_value
    conversation_param = Conversation._meta.pk.get_db_prep_value(conversation_id, connection)
    # A tool's result is sent whatever its status (an error result answers its call too: a call
    # with no answer is refused by providers).
    params = [
        conversation_param,
        *USABLE_STATUSES,
        MessageType.TOOL_RESULT,
        False,
        *(prep(pk, connection) for pk in excluded),
    ]
    return list(Message.objects.raw(sql, params))


def _speaker(message: Message, names: dict[Any, str]) -> str:
    if message.agent_id in names:
        return names[message.agent_id]
    agent = message.agent  # an agent no longer in the conversation: one query (sync code)
    return agent.name if agent else "Agent"


def _as_chat(
    message: Message, *, agent: Agent, multi_agent: bool, names: dict[Any, str]
) -> list[ChatMessage]:
    meta = message.metadata or {}
    own = message.agent_id == agent.pk
    if message.type == MessageType.TOOL_CALL:
        if not own:
            return []
        call = ToolCall(
            id=meta.get("toolCallId", ""), name=meta.get("tool", ""), arguments=meta.get("parameters") or {}
        )
        return [ChatMessage(role="assistant", content="", tool_calls=(call,))]
    if message.type == MessageType.TOOL_RESULT:
        if meta.get("agent_id") not in (None, str(agent.pk)):
            return []
        return [
            ChatMessage(
                role="tool",
                content=message.content,
                tool_call_id=meta.get("toolCallId"),
                name=meta.get("tool"),
            )
        ]
    if not message.content.strip():
        return []
    if message.role == MessageRole.AGENT:
        if own:
            return [ChatMessage(role="assistant", content=message.content)]
        if not multi_agent:
            # A person's chat has one assistant side: replies written before the person changed who
            # answers (conversations.services.conversation_agent_set) are the assistant's turns too.
            return [ChatMessage(role="assistant", content=message.content)]
        return [ChatMessage(role="user", content=f"{_speaker(message, names)}: {message.content}")]
    if message.role == MessageRole.SYSTEM:
        return [ChatMessage(role="user", content=message.content)] if multi_agent else []
    prefix = "Person watching: " if multi_agent else ""
    attached = meta.get("attachments_text")  # the text of its files (runs.attachments)
    suffix = f"\n\n{attached}" if isinstance(attached, str) and attached else ""
    return [ChatMessage(role="user", content=prefix + message.content + suffix)]


# --- fitting a history to the model's context window ---------------------------------------------

MIN_REPLY_TOKENS = 64  # the least a reply is left; below it, older turns go (or the message is refused)


class ContextOverflow(ProviderError):
    """The newest turn alone (with the instructions) leaves the reply less than its minimum."""

    def __init__(self, *, prompt_tokens: int, window: int, min_reply: int) -> None:
        message = (
            f"The latest message is too long for this agent: with its instructions it takes about "
            f"{prompt_tokens} tokens, and the model's context window holds {window}, "
            f"{min_reply} of them kept for the reply. Shorten the message or split it."
        )
        super().__init__("bad_request", message)
        self.prompt_tokens = prompt_tokens
        self.window = window
        self.min_reply = min_reply


@dataclass(frozen=True, slots=True)
class Fitted:
    """A history that fits: what to send, what it takes, what the reply may use."""

    messages: list[ChatMessage]
    prompt_tokens: int
    reply_tokens: int | None  # the request's max_tokens; None: the provider's own default
    dropped: int  # messages left out (the oldest)


def reply_reserve(*, window: int, max_tokens: int | None, min_reply: int = MIN_REPLY_TOKENS) -> int:
    """The room kept for the reply before older turns are dropped: the agent's ``max_tokens``
    (a quarter of the window when unset), at most half the window, at least ``min_reply``."""
    wanted = max_tokens if max_tokens else window // 4
    return max(min_reply, min(wanted, window // 2))


def _turns(body: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """Messages in turns: each turn starts at a ``user`` message and holds what answered it (an
    assistant's tool calls, their results, the reply), so a call and its result stay together."""
    turns: list[list[ChatMessage]] = []
    for message in body:
        if message.role == "user" or not turns:
            turns.append([message])
        else:
            turns[-1].append(message)
    return turns


def fit_history(
    messages: Sequence[ChatMessage],
    *,
    counter: TokenCounter,
    max_tokens: int | None,
    min_reply: int = MIN_REPLY_TOKENS,
) -> Fitted:
    """Fit ``messages`` (leading system messages, then the conversation) to ``counter.window``.

    The system messages and the newest turn are always kept; older turns are kept, newest first,
    while the prompt leaves the reply its reserve (:func:`reply_reserve`); the first turn that does
    not fit ends the history there (no gaps). A turn is a ``user`` message with what answered it,
    so tool calls and results are kept or dropped together. The reply's budget is what the window
    leaves, capped by ``max_tokens``. Raises :class:`ContextOverflow` when the system messages and
    the newest turn leave less than ``min_reply``.
    """
    window = counter.window
    head = 0
    while head < len(messages) and messages[head].role == "system":
        head += 1
    system, turns = list(messages[:head]), _turns(messages[head:])
    reserve = reply_reserve(window=window, max_tokens=max_tokens, min_reply=min_reply)
    used = counter.prompt_tokens(system)
    kept: list[list[ChatMessage]] = []
    for turn in reversed(turns):
        cost = sum(counter.message_tokens(m) for m in turn)
        if kept and used + cost > window - reserve:
            break
        kept.append(turn)
        used += cost
    kept.reverse()
    # The per-message counts are close; the whole prompt is counted as the provider will see it.
    while True:
        chosen = [*system, *(m for turn in kept for m in turn)]
        prompt = counter.prompt_tokens(chosen)
        if len(kept) <= 1 or prompt <= window - reserve:
            break
        kept.pop(0)
    left = window - prompt
    if left < min_reply:
        raise ContextOverflow(prompt_tokens=prompt, window=window, min_reply=min_reply)
    if max_tokens:
        reply_tokens: int | None = min(max_tokens, left)
    else:
        reply_tokens = None if left >= reserve else left
    return Fitted(
        messages=chosen, prompt_tokens=prompt, reply_tokens=reply_tokens, dropped=len(messages) - len(chosen)
    )
