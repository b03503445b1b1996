"""A conversation as a file: a Markdown transcript a person reads, or JSON a program reads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from conversations.models import Conversation, Message, MessageRole, MessageStatus, MessageType

_STATUS_NOTE = {
    MessageStatus.STOPPED: "stopped",
    MessageStatus.INCOMPLETE: "incomplete",
    MessageStatus.ERROR: "failed",
    MessageStatus.STREAMING: "still being written",
}


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else ""


def _speaker(message: Message, owner_name: str) -> str:
    if message.role == MessageRole.USER:
        return owner_name
    if message.role == MessageRole.AGENT:
        return message.agent.name if message.agent_id and message.agent else "Agent"
    return message.role.capitalize()


def transcript_markdown(
    *, conversation: Conversation, agents: Sequence[Any], messages: Sequence[Message], exported_at: datetime
) -> str:
    """The conversation as Markdown: a heading, who took part, then each message under its speaker
    and time. Message text is kept as written (it is Markdown already); tool calls become one line."""
    owner_name = conversation.owner.get_username() if conversation.owner_id else "User"
    lines = [f"# {conversation.title or 'Conversation'}", ""]
    if agents:
        names = ", ".join(f"{agent.name} ({agent.provider} · {agent.model})" for agent in agents)
        lines.append(f"- Agents: {names}")
    lines += [
        f"- Started: {_when(conversation.created_at)}",
        f"- Exported: {_when(exported_at)}",
        f"- Conversation: `{conversation.id}`",
        "",
    ]
    for message in messages:
        if message.type == MessageType.TOOL_CALL:
            tool = (message.metadata or {}).get("tool") or "tool"
            lines += [
                "---",
                "",
                f"*{_speaker(message, owner_name)} called `{tool}`* · {_when(message.created_at)}",
                "",
            ]
            continue
        if message.type == MessageType.TOOL_RESULT:
            lines += [
                "---",
                "",
                f"*Tool result* · {_when(message.created_at)}",
                "",
                "```",
                message.content,
                "```",
                "",
            ]
            continue
        note = _STATUS_NOTE.get(message.status)
        head = f"**{_speaker(message, owner_name)}** · {_when(message.created_at)}"
        lines += [
            "---",
            "",
            head + (f" · *{note}*" if note else ""),
            "",
            message.content or "*(no text)*",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


def transcript_json(data: dict[str, Any]) -> bytes:
    """The export's JSON (the API's own shapes), indented for a reader."""
    return orjson.dumps(data, option=orjson.OPT_INDENT_2)
