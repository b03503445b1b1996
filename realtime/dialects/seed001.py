"""Seed 001's socket dialect (``/ws/{session_id}``): its ``WebSocketMessage`` frames.

Every frame the seed's client reads is ``{type, content, sender, receiver, timestamp, metadata}``
with ``type`` one of the seed's ``MessageType`` values. A finished reply (``agent_message``) is a
``response`` frame with ``metadata {role: "assistant", provider, model}``; the engine's ``error``,
``info``, ``system`` and ``cooldown`` events keep their type, their text in ``content`` and their
fields in ``metadata`` (``{code, details}`` for an error, as the seed's "Message Errors" show).
Streaming chunks, run starts and the person's own messages have no seed frame and are not sent.
Every conversation event carries its ``metadata.seq``, so a seed client may resume (``resume``
``{last_seq}`` or ``?last_seq=`` on connect) as a native one does. The socket's own frames
(connection, state, acks, errors, pings) are rendered by :meth:`Seed001Codec.control`.
docs/dialects.md, "Seed 001".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from channels.db import database_sync_to_async

from conversations.models import SessionType
from conversations.selectors import conversation_get_for_user, conversation_participants
from core.errors import NexusError
from realtime.consumers import ConversationSocket
from runs.event_encoding import now_iso
from runs.eventlog.base import LoggedEvent

# The seed's MessageType values this dialect sends.
RESPONSE, ERROR, INFO, SYSTEM, COOLDOWN, PING = "response", "error", "info", "system", "cooldown", "ping"
# Longest content a frame carries before the rest is cut (the frame limit rules the whole frame).
_FRAME_SLACK = 1024


@dataclass(frozen=True, slots=True)
class Speaker:
    """One agent of the session as the seed names it."""

    agent_id: str
    role: str
    provider: str
    model: str


@dataclass(slots=True)
class Seed001Codec:
    """Renders logged events as seed 001 frames for one socket: who its person is (the
    ``receiver`` of replies) and the session's agents (``sender``, ``provider``, ``model``)."""

    user: str = ""
    speakers: dict[str, Speaker] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # agent ids in speaking order
    agent_agent: bool = False
    name: str = "seed001"

    def render(self, evt: LoggedEvent, *, frame_bytes: int) -> tuple[str, ...]:
        frame = self._frame(evt)
        if frame is None:
            return ()
        frame.setdefault("metadata", {})["seq"] = evt.seq
        return (_fit(frame, frame_bytes),)

    def _frame(self, evt: LoggedEvent) -> dict[str, Any] | None:
        raw = orjson.loads(evt.payload)
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        stamp = raw.get("timestamp") or now_iso()
        match evt.kind:
            case "agent_message":
                agent_id = str(data.get("agent_id") or "")
                speaker = self.speakers.get(agent_id)
                meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
                return {
                    "type": RESPONSE,
                    "content": data.get("content", ""),
                    "sender": agent_id,
                    "receiver": self._receiver(agent_id),
                    "timestamp": stamp,
                    "metadata": {
                        "role": "assistant",
                        "provider": speaker.provider if speaker else meta.get("provider"),
                        "model": meta.get("model") or (speaker.model if speaker else None),
                        "agent_role": speaker.role if speaker else None,
                        "agent_name": data.get("agent_name"),
                        "message_id": data.get("messageId"),
                        "status": data.get("status"),
                    },
                }
            case "error":
                return _frame(
                    ERROR,
                    data.get("message", ""),
                    stamp,
                    {"code": data.get("code"), "details": data.get("details") or {}},
                )
            case "info":
                return _frame(INFO, data.get("message", ""), stamp, _without(data, "message"))
            case "system":
                if data.get("code") == "agent_changed":
                    self._learn(data.get("agents"))
                return _frame(SYSTEM, data.get("message", ""), stamp, _without(data, "message"))
            case "cooldown":
                agent_id = str(data.get("agent_id") or "")
                return {
                    "type": COOLDOWN,
                    "content": f"Next turn after {data.get('until')}.",
                    "sender": agent_id,
                    "timestamp": stamp,
                    "metadata": {"agent_id": agent_id, "cooldown_until": data.get("until")},
                }
            case "run_finished" if data.get("status") == "stopped":
                return _frame(INFO, "The reply was stopped.", stamp, {"code": "stopped", **data})
        return None

    def _learn(self, agents: Any) -> None:
        """The session's agents after a change of who answers (the ``agent_changed`` event)."""
        if not isinstance(agents, list):
            return
        order = []
        for brief in agents:
            if not isinstance(brief, dict) or not brief.get("id"):
                continue
            agent_id = str(brief["id"])
            order.append(agent_id)
            if agent_id not in self.speakers:
                self.speakers[agent_id] = Speaker(
                    agent_id=agent_id,
                    role=str(brief.get("role") or ""),
                    provider=str(brief.get("provider") or ""),
                    model=str(brief.get("model") or ""),
                )
        self.order = order

    def _receiver(self, agent_id: str) -> str:
        """The person, or in an agent_agent session the agent who speaks next."""
        if self.agent_agent and agent_id in self.order and len(self.order) > 1:
            return self.order[(self.order.index(agent_id) + 1) % len(self.order)]
        return self.user

    def control(self, native: str) -> str:
        """The socket's own frames (native ``{type, timestamp, data}``) in the seed's shape."""
        raw = orjson.loads(native)
        kind = raw.get("type")
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        stamp = raw.get("timestamp") or now_iso()
        match kind:
            case "error":
                meta = {"code": data.get("code"), "details": data.get("details") or {}}
                if data.get("retry_after") is not None:
                    meta["retry_after"] = data["retry_after"]
                frame = _frame(ERROR, data.get("message", ""), stamp, meta)
            case "info":
                frame = _frame(INFO, data.get("message", ""), stamp, _without(data, "message"))
            case "connection":
                frame = _frame(SYSTEM, "Connected.", stamp, {"code": "connected", **data})
            case "session_state":
                meta = {
                    "code": "session_state",
                    "session_id": data.get("conversation_id"),
                    "status": data.get("status"),
                    "last_seq": data.get("last_seq"),
                    "message_count": len(data.get("messages") or []),
                }
                frame = _frame(SYSTEM, "Session state.", stamp, meta)
            case "ack":
                frame = _frame(INFO, "Received.", stamp, {"code": "ack", **data})
            case "ping":
                frame = _frame(PING, "", stamp, {})
            case "pong":
                frame = _frame(PING, "pong", stamp, {})
            case _:
                frame = _frame(SYSTEM, "", stamp, {"code": kind, **data})
        return orjson.dumps(frame).decode()


def _frame(kind: str, content: Any, stamp: str, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "content": str(content or ""), "timestamp": stamp, "metadata": metadata}


def _without(data: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in names}


def _fit(frame: dict[str, Any], frame_bytes: int) -> str:
    """The frame's JSON, its content cut (flagged ``metadata.content_truncated``) to fit."""
    text = orjson.dumps(frame).decode()
    excess = len(text.encode()) - frame_bytes
    if excess <= 0:
        return text
    content = frame.get("content") or ""
    keep = max(0, len(content.encode()) - excess - _FRAME_SLACK)
    frame = {**frame, "content": content.encode()[:keep].decode(errors="ignore")}
    frame["metadata"] = {**frame.get("metadata", {}), "content_truncated": True}
    return orjson.dumps(frame).decode()


def seed_provider(agent: Any) -> str:
    """The provider name the seed's client chose (a preset such as ``groq``), else the agent's."""
    metadata = (agent.config or {}).get("metadata") or {}
    return str(metadata.get("provider_preset") or agent.provider)


def _codec_for(user: Any, conversation_id: Any) -> Seed001Codec:
    codec = Seed001Codec(user=user.get_username())
    with contextlib.suppress(NexusError):  # unknown or not theirs: the bind answers 4001 after this
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        codec.agent_agent = conversation.session_type == SessionType.AGENT_AGENT
        for agent in conversation_participants(conversation=conversation):
            codec.speakers[str(agent.pk)] = Speaker(
                agent_id=str(agent.pk),
                role=agent.participant_role,
                provider=seed_provider(agent),
                model=agent.model,
            )
            codec.order.append(str(agent.pk))
    return codec


class Seed001Socket(ConversationSocket):
    """``/ws/{session_id}``: the conversation socket speaking seed 001's frames (its own codec)."""

    codec: Seed001Codec = Seed001Codec()  # until connect knows the person and the session

    async def on_connected(self) -> None:
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.codec = await database_sync_to_async(_codec_for)(self.user, conversation_id)
        await super().on_connected()

    async def send(  # type: ignore[override]  # channels' WebsocketConsumer.send; its stubs give AsyncConsumer's
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Frames the socket makes itself (native ``{type, timestamp, data}``) go out in the seed's
        shape; the codec's renderings of conversation events go out as they are."""
        if text_data is not None:
            with contextlib.suppress(orjson.JSONDecodeError):
                head = orjson.loads(text_data)
                if isinstance(head, dict) and "data" in head and "metadata" not in head:
                    text_data = self.codec.control(text_data)
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
