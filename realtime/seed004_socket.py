"""Seed 004's agent socket at ``/api/agent``: the ``/ws/agent/`` socket in seed 004's dialect.

What it adds to the native agent socket (docs/dialects.md, "Seed 004"):

- ``initialize {sessionId}`` binds the user's session of that id (the client's own id, such as
  "session-123", or a conversation's UUID when it is the user's), or creates it under that id
  (``runs.session_state.conversation_bind_client_session``); another user's session of the same
  id is never bound nor revealed;
- ``context.preferences`` (``model``, ``temperature``) are stored as the session's preferences,
  applied to its runs where the agent allows (``agents.preferences``);
- every frame it sends carries ``sessionId`` (``realtime.dialects.seed004``);
- a frame naming the ``sessionId`` before any ``initialize`` binds that session first (the seed's
  client sends its ``sessionId`` on every frame), and a message naming none starts a new session;
  a frame naming another session than the bound one is refused (``validation_error``): switching
  sessions is an ``initialize``.

Everything else (limits, resume, stop, tool results, feedback, delivery) is the native socket's.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from core.errors import NexusError, ValidationFailed
from realtime import protocol
from realtime.consumers import AgentSocket
from realtime.dialects.seed004 import SESSION_MARGIN, Seed004Codec, Seed004Frame, preferences_of
from runs.session_state import conversation_bind, conversation_bind_client_session

# Frames that send a message: they bind a new session on a socket that has none yet.
MESSAGE_TYPES = frozenset({"user_message", "text", "query"})


class Seed004Socket(AgentSocket):
    """``/api/agent``: seed 004's client, unchanged."""

    dialect: Seed004Codec  # also the socket's codec: it renders the events and the control frames

    async def connect(self) -> None:
        self.codec = self.dialect = Seed004Codec()
        self._fields: dict[str, Any] = {}
        await super().connect()

    # channels' stubs give AsyncWebsocketConsumer.send the base consumer's signature; this is the
    # websocket one (text_data, bytes_data, close), as channels itself defines it.
    async def send(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        if text_data is not None and not isinstance(text_data, Seed004Frame):
            text_data = self.dialect.control(text_data)
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def send_state(self, state: dict[str, Any]) -> None:
        # room for the sessionId the codec adds
        frame_bytes = settings.NEXUS_WS_MAX_MESSAGE_BYTES - SESSION_MARGIN
        await self.send(text_data=protocol.session_state_frame(state, frame_bytes))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The frame's fields, for what the native parser does not keep (sessionId on every frame,
        # preferences); the native receive checks size and shape first and answers any problem.
        self._fields = _fields_of(text_data)
        await super().receive(text_data=text_data, bytes_data=bytes_data)

    async def handle(self, frame: protocol.ClientFrame) -> None:
        if isinstance(frame, protocol.Initialize):
            await self._initialize(frame)
            return
        named = self._fields.get("sessionId")
        if named is None and self.conversation is None and self._fields.get("type") in MESSAGE_TYPES:
            # a message before any initialize and without a sessionId: a new session, as an
            # initialize without one makes (the native socket would ask for initialize first)
            await self._initialize(protocol.Initialize())
            if self.conversation is None:
                return
        elif named is not None and named != self.dialect.session_id:
            if (
                not isinstance(named, str)
                or not named
                or len(named) > protocol.MAX_ID_CHARS
                or "\x00" in named
            ):
                raise ValidationFailed(
                    "Invalid sessionId.",
                    details={"sessionId": [f"A string of 1 to {protocol.MAX_ID_CHARS} characters."]},
                )
            if self.conversation is not None:
                raise ValidationFailed(
                    "This socket is bound to another session; send initialize to switch.",
                    details={"sessionId": [f"This socket is bound to {self.dialect.session_id}."]},
                )
            await self._initialize(protocol.Initialize(conversation_id=named))
            if self.conversation is None:
                return
        await super().handle(frame)

    async def _initialize(self, frame: protocol.Initialize) -> None:
        preferences = preferences_of(self._fields)
        session_id = frame.conversation_id or self.dialect.session_id
        if session_id is None:
            # No sessionId: a new conversation, whose UUID is the session's id from now on.
            created = await conversation_bind(user=self.user, agent_id=frame.agent_id, context=frame.context)
            session_id = str(created.pk)
        bound, self.dialect.session_id = self.dialect.session_id, session_id
        try:
            conversation = await conversation_bind_client_session(
                user=self.user,
                session_id=session_id,
                agent_id=frame.agent_id,
                context=frame.context,
                preferences=preferences,
            )
        except NexusError as exc:
            # the error names the session asked for; the socket stays bound to the one it had
            await self.send_error(exc.code, exc.message, exc.details, exc.retry_after)
            self.dialect.session_id = bound
            return
        except BaseException:
            self.dialect.session_id = bound
            raise
        await self._bind(conversation_id=str(conversation.pk), last_seq=frame.last_seq)


def _fields_of(text: str | None) -> dict[str, Any]:
    """A client frame's fields, top level and ``data`` merged as the native parser reads them;
    empty for anything it would refuse (too large, not JSON, not an object)."""
    if text is None or len(text) > settings.NEXUS_WS_MAX_MESSAGE_BYTES:
        return {}
    try:
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(frame, dict):
        return {}
    data = frame.get("data")
    return {**frame, **(data if isinstance(data, dict) else {})}
