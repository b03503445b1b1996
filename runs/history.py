"""A conversation's stored messages, as the provider-neutral chat history one agent sees."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agents.models import Agent
from conversations.models import Conversation, Message, MessageRole, MessageStatus, MessageType
from providers.base import ChatMessage, ToolCall

HISTORY_LIMIT = 60
_USABLE = (MessageStatus.COMPLETE, MessageStatus.STOPPED, MessageStatus.INCOMPLETE)


def _system_prompt(agent: Agent, conversation: Conversation) -> str:
    parts = [agent.system_prompt.strip()]
    if agent.personality.strip():
        parts.append(f"Personality: {agent.personality.strip()}")
    settings = conversation.settings or {}
    if conversation.session_type == "agent_agent":
        others = [a.name for a in conversation.agents.all() if a.pk != agent.pk]
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

    Its own turns are ``assistant``; people's messages and other agents' turns are ``user`` (each
    agent sees the others as the other party), prefixed with the speaker's name when agents talk.
    """
    messages = conversation.messages.exclude(pk=exclude_message_id).filter(status__in=_USABLE)
    # With the agents at hand, only the columns a history needs (time to first token).
    messages = messages.select_related("agent") if speakers is None else messages.only(*_HISTORY_FIELDS)
    rows = list(messages.order_by("-seq", "-created_at")[:HISTORY_LIMIT])
    rows.reverse()
    names = {a.pk: a.name for a in speakers} if speakers is not None else None
    multi_agent = conversation.session_type == "agent_agent"
    history: list[ChatMessage] = []
    system = _system_prompt(agent, conversation)
    if system:
        history.append(ChatMessage(role="system", content=system))
    if then is not None:
        rows.append(then)  # a message stored in this transaction, its seq not assigned yet
    for message in rows:
        history.extend(_as_chat(message, agent=agent, multi_agent=multi_agent, names=names))
    return history


_HISTORY_FIELDS = ("id", "agent", "role", "type", "content", "metadata", "seq", "created_at")


def _speaker(message: Message, names: dict[Any, str] | None) -> str:
    if names is not None and message.agent_id in names:
        return names[message.agent_id]
    agent = message.agent  # an agent no longer in the conversation: one query (sync code)
    return agent.name if agent else "Agent"


def _as_chat(
    message: Message, *, agent: Agent, multi_agent: bool, names: dict[Any, str] | None = None
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
        speaker = _speaker(message, names)
        return [
            ChatMessage(
                role="user", content=f"{speaker}: {message.content}" if multi_agent else message.content
            )
        ]
    if message.role == MessageRole.SYSTEM:
        return [ChatMessage(role="user", content=message.content)] if multi_agent else []
    prefix = "Person watching: " if multi_agent else ""
    return [ChatMessage(role="user", content=prefix + message.content)]
