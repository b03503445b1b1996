"""Seed 002's agent stream (``POST /api/agent/run``, docs/dialects.md "Seed 002"): each logged
event as the seed's SSE messages, ``data: {"type": ..., "content": ...}``.

The seed says only "streaming response with SSE, the agent's responses in real time"; the message
shape is the one its client family reads (a ``type`` naming the unit and its ``content``):

- ``streaming_chunk`` -> ``model_output`` (content: the text delta)
- ``agent_message`` -> ``final_answer`` (content: the whole reply; ``message_id``; ``truncated``
  when the reply was longer than a frame: the model_output deltas and the history hold it whole)
- ``tool_call`` -> ``tool`` (content: ``{id, name, arguments}``)
- ``tool_result`` -> ``tool_result`` (content: ``{id, name, result, is_error}``)
- ``error`` -> ``error`` (content: the message; ``code``)
- ``info`` -> ``info`` (content: the message; ``code``)
- ``run_finished`` -> ``done`` (content: ``{run_id, status, message_id, error}``)
- ``system`` ``conversation_deleted`` / ``session_expired`` -> ``error`` with that code
- anything else (the user's own message, ``run_started``, branch notes): no message.
"""

from __future__ import annotations

from typing import Any

import orjson

from runs.event_encoding import fit_logged
from runs.eventlog.base import LoggedEvent

ENDINGS = frozenset({"conversation_deleted", "session_expired"})


def message(kind: str, content: Any, **extra: Any) -> str:
    """One seed 002 stream message (the SSE ``data`` line's JSON)."""
    return orjson.dumps({"type": kind, "content": content, **extra}).decode()


def _frames(kind: str, data: dict[str, Any]) -> tuple[str, ...]:
    match kind:
        case "streaming_chunk":
            chunk = data.get("chunk") or ""
            return (message("model_output", chunk),) if chunk else ()
        case "agent_message":
            extra = {"truncated": True} if data.get("content_truncated") else {}
            return (
                message("final_answer", data.get("content", ""), message_id=data.get("messageId"), **extra),
            )
        case "tool_call":
            content = {
                "id": data.get("toolCallId"),
                "name": data.get("tool"),
                "arguments": data.get("parameters"),
            }
            return (message("tool", content),)
        case "tool_result":
            content = {
                "id": data.get("toolCallId"),
                "name": data.get("tool"),
                "result": data.get("result"),
                "is_error": bool(data.get("is_error")),
            }
            return (message("tool_result", content),)
        case "error":
            return (message("error", data.get("message", ""), code=data.get("code")),)
        case "info":
            return (message("info", data.get("message", ""), code=data.get("code")),)
        case "run_finished":
            content = {
                "run_id": data.get("run_id"),
                "status": data.get("status"),
                "message_id": data.get("message_id"),
                "error": data.get("error"),
            }
            return (message("done", content),)
        case "system" if data.get("code") in ENDINGS:
            return (message("error", data.get("message", ""), code=data.get("code")),)
    return ()


class Seed002Codec:
    name = "seed002"

    def render(self, evt: LoggedEvent, *, frame_bytes: int) -> tuple[str, ...]:
        if evt.kind not in {
            "streaming_chunk",
            "agent_message",
            "tool_call",
            "tool_result",
            "error",
            "info",
            "run_finished",
            "system",
        }:
            return ()
        decoded = orjson.loads(fit_logged(evt.payload, frame_bytes))
        data = decoded.get("data")
        return _frames(evt.kind, data if isinstance(data, dict) else {})

    def render_error(self, code: str, text: str) -> str:
        """A stream that cannot go on (the log no longer covers it): the seed's error message."""
        return message("error", text, code=code)


SEED002 = Seed002Codec()
