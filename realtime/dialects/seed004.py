"""Seed 004's dialect (OpsHub's AI Agent socket, ``/api/agent``): native frames with ``sessionId``.

Seed 004's frames are Nexus's own (``{type, data}`` with ``streaming_chunk``, ``agent_message``,
``tool_call``, ``error``), each carrying the client's ``sessionId`` in ``data``: the id the
client chose in ``initialize`` (e.g. "session-123"), or the conversation's UUID when it chose
none. ``agent_message`` also carries the seed's ``context`` (an object; Nexus keeps no per-reply
context, so it is empty). Every other field is the native one, so a native client reads these
frames too. docs/dialects.md, "Seed 004".
"""

from __future__ import annotations

from typing import Any

import orjson

from core.errors import ValidationFailed
from runs.event_encoding import fit_logged
from runs.eventlog.base import LoggedEvent

# '"sessionId":"<128 chars, each at most 6 bytes escaped>",' and the seed's '"context":{},'
SESSION_MARGIN = 128 * 6 + 32


class Seed004Frame(str):
    """A frame this codec rendered: the socket sends it as it is (a plain str is a control frame
    the socket made itself, which gets its ``sessionId`` on the way out)."""

    __slots__ = ()


class Seed004Codec:
    """One per socket: it knows the session the socket is bound to."""

    name = "seed004"

    def __init__(self) -> None:
        self.session_id: str | None = None

    def render(self, evt: LoggedEvent, *, frame_bytes: int) -> tuple[str]:
        frame = orjson.loads(fit_logged(evt.payload, frame_bytes - SESSION_MARGIN))
        frame["seq"] = evt.seq
        return (self._with_session(frame),)

    def control(self, text: str) -> str:
        """A frame the socket made (connection, session_state, ack, error, info, pong...) in
        this dialect: the same frame with ``sessionId`` in its ``data``."""
        try:
            frame = orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
        if not isinstance(frame, dict):
            return text
        return self._with_session(frame)

    def _with_session(self, frame: dict[str, Any]) -> Seed004Frame:
        data = frame.get("data")
        data = dict(data) if isinstance(data, dict) else {}
        data["sessionId"] = self.session_id
        if frame.get("type") == "agent_message":
            data.setdefault("context", {})
        frame["data"] = data
        return Seed004Frame(orjson.dumps(frame).decode())


def preferences_of(fields: dict[str, Any]) -> dict[str, Any]:
    """The ``preferences`` of an ``initialize`` (the seed's ``WorkspaceContext.preferences``, in
    ``context``; ``data.preferences`` is read too, and wins): ``model`` and ``temperature`` as
    sent, their values checked by the conversation service. Raises ValidationFailed when
    ``preferences`` is not an object."""
    context = fields.get("context")
    found: dict[str, Any] = {}
    for source in (
        context.get("preferences") if isinstance(context, dict) else None,
        fields.get("preferences"),
    ):
        if source is None:
            continue
        if not isinstance(source, dict):
            raise ValidationFailed(
                "preferences must be an object.", details={"preferences": ["Expected an object."]}
            )
        found.update({k: source[k] for k in ("model", "temperature") if k in source})
    return found
