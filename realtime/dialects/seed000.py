"""Seed 000's codec: the ``neural-event`` monitor frames (the root WebSocket ``/`` and ``/ws/events/``).

Seed 000's client reads ``{type: "neural-event", kind, data{agentId, agentName, chunk | response,
conversationId, messageId}}`` and, on connect, ``{type: "connection", status: "connected",
timestamp}``. Each logged event of a conversation is rendered as at most one frame; an event the
seed has no kind for renders as none. The seed's two kinds are ``agent-response`` (a chunk) and
``agent-response-complete`` (the whole reply); the others (``user-message``, ``agent-run-started``,
``agent-run-finished``, ``tool-call``, ``tool-result``, ``agent-error``) follow the same shape and
a seed client that ignores unknown kinds ignores them. docs/dialects.md, "Seed 000".
"""

from __future__ import annotations

from typing import Any

import orjson

from runs.event_encoding import fit_logged
from runs.eventlog.base import LoggedEvent

# Bytes a neural-event adds to the event it renders (agent name, ids, kind): the event is fitted to
# the frame limit less this, so the frame never passes it.
NEURAL_MARGIN = 1024


def connection_frame(timestamp: str) -> str:
    """The seed's greeting, sent once on connect."""
    return orjson.dumps({"type": "connection", "status": "connected", "timestamp": timestamp}).decode()


class Seed000Codec:
    """Renders logged events as ``neural-event`` frames. One per socket: it remembers agent names
    (``agent_names``, filled by the socket from the database for ``agent_ids_unknown``)."""

    name = "seed000"

    def __init__(self) -> None:
        self.agent_names: dict[str, str] = {}

    def decode(self, evt: LoggedEvent, *, frame_bytes: int) -> dict[str, Any]:
        """The logged event as a dict, fitted so that its neural-event fits in ``frame_bytes``."""
        decoded: dict[str, Any] = orjson.loads(fit_logged(evt.payload, frame_bytes - NEURAL_MARGIN))
        return decoded

    def agent_ids_unknown(self, events: list[dict[str, Any]]) -> set[str]:
        """The agents named by ``events`` whose names this codec does not know yet."""
        ids = {str((e.get("data") or {}).get("agent_id") or "") for e in events}
        return {i for i in ids if i and i not in self.agent_names}

    def render(
        self,
        evt: LoggedEvent,
        *,
        frame_bytes: int,
        conversation_id: str = "",
        decoded: dict[str, Any] | None = None,
    ) -> tuple[str, ...]:
        """The frames for one logged event of ``conversation_id`` (``decoded``: the event as
        :meth:`decode` gave it, when the caller already has it)."""
        event = decoded if decoded is not None else self.decode(evt, frame_bytes=frame_bytes)
        frame = self.render_event(conversation_id, evt.seq, event)
        return (frame,) if frame is not None else ()

    def render_event(self, conversation_id: str, seq: int, evt: dict[str, Any]) -> str | None:
        """One decoded event as the seed's ``neural-event`` frame (JSON text); None for events the
        seed has no kind for."""
        data = evt.get("data") or {}
        agent_id = data.get("agent_id")
        base = {
            "agentId": agent_id,
            "agentName": self.agent_names.get(str(agent_id), "") if agent_id else "",
            "conversationId": conversation_id,
            "messageId": data.get("messageId") or data.get("message_id"),
        }
        match evt.get("type"):
            case "streaming_chunk":
                if data.get("isDone"):
                    return None
                kind, payload = "agent-response", {**base, "chunk": data.get("chunk", "")}
            case "agent_message":
                kind, payload = (
                    "agent-response-complete",
                    {**base, "response": data.get("content", ""), "status": data.get("status")},
                )
                if data.get("content_truncated"):
                    payload["response_truncated"] = True
            case "user_message":
                kind, payload = "user-message", {**base, "content": data.get("content", "")}
            case "run_started":
                kind, payload = "agent-run-started", {**base, "runId": data.get("run_id")}
            case "run_finished":
                kind, payload = (
                    "agent-run-finished",
                    {**base, "runId": data.get("run_id"), "status": data.get("status")},
                )
            case "tool_call":
                kind, payload = (
                    "tool-call",
                    {**base, "tool": data.get("tool"), "toolCallId": data.get("toolCallId")},
                )
            case "tool_result":
                kind, payload = "tool-result", {**base, "toolCallId": data.get("toolCallId")}
            case "error":
                kind, payload = (
                    "agent-error",
                    {**base, "code": data.get("code"), "message": data.get("message")},
                )
            case _:
                return None
        frame = {
            "type": "neural-event",
            "kind": kind,
            "seq": seq,
            "timestamp": evt.get("timestamp"),
            "data": payload,
        }
        return orjson.dumps(frame).decode()
