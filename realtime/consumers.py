"""WebSocket consumers: they only translate. Frames in -> service calls; log events -> frames out.

Every socket accepts first and closes with a 4xxx code after an ``error`` frame, so browsers see
the code. Runs are never owned by a socket: closing one never stops a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from conversations.selectors import message_get_for_user
from conversations.services import message_feedback
from core.auth import User
from core.errors import NexusError, NotFound, ValidationFailed
from realtime import protocol
from realtime.connections import Credentials
from realtime.dialects import Codec
from realtime.dialects.native import NATIVE
from realtime.dialects.seed003 import SEED003
from realtime.limits import get_limits
from realtime.middleware import SUBPROTOCOL
from realtime.presence import presence
from runs.approvals import approval_decide
from runs.branching import message_choose, message_continue, message_regenerate
from runs.eventlog import get_event_log
from runs.eventlog.base import EventLogUnavailable, LoggedEvent
from runs.sending import message_send
from runs.session_state import conversation_bind, engine_ensure_started, session_state
from runs.stopping import run_stop
from runs.tool_answers import tool_result_submit

logger = logging.getLogger(__name__)

CLOSE_GENERIC = 4000
CLOSE_INVALID_SESSION = 4001
CLOSE_EXPIRED = 4002
CLOSE_AUTH = 4003
CLOSE_RATE_LIMITED = 4004
# Not 1009: daphne's WebSocket library (autobahn) refuses any application close code but 1000 and
# 3000-4999, so a 1009 from Nexus reaches the client as 1011 (docs/protocol.md, "Oversized frames").
CLOSE_TOO_LARGE = 4009
# daphne's autobahn refuses 1011 from an application as it does 1009; realtime/send_buffer.py lets
# it through under daphne (as daphne itself sends it for a crashed application).
CLOSE_INTERNAL = 1011
RATE_STRIKES_BEFORE_CLOSE = 10
MAX_PENDING_EVENTS = 5000


class UnknownPathSocket(AsyncWebsocketConsumer):
    """Every WebSocket path Nexus does not serve: accepted, one ``error`` frame ``not_found``, close
    4000 (a close before ``accept`` would reach the client as HTTP 403, a routing error as 500)."""

    channel_layer_alias = None  # type: ignore[assignment]  # channels takes None (no layer); its stubs say str

    async def connect(self) -> None:
        await self.accept()
        path = self.scope.get("path", "")[:200]
        await self.send(text_data=protocol.error_frame("not_found", f"No WebSocket endpoint at {path}."))
        await self.close(code=CLOSE_GENERIC)


class BaseSocket(AsyncWebsocketConsumer):
    """Authentication, limits, keepalive and the error-frame discipline shared by every endpoint."""

    requires_staff = False
    # Application-level ``ping`` frames, answered by the client (close 4002 on silence). False for a
    # dialect whose client never sends (seed 000's monitor): daphne's WebSocket protocol pings
    # (``--ping-interval``/``--ping-timeout``), which clients answer on their own, keep it alive.
    app_pings = True
    # Sockets take nothing from the channel layer (events come from the log), so they do not
    # listen on it: a Redis restart would otherwise end every socket with 1011.
    channel_layer_alias = None  # type: ignore[assignment]  # channels takes None (no layer); its stubs say str
    socket_id: str
    user: User  # a signed-in user once connect() has checked it

    async def connect(self) -> None:
        self.socket_id = uuid.uuid4().hex
        self.user = cast(User, self.scope.get("user"))  # the middleware's; checked just below
        self.auth: dict[str, Any] = cast("dict[str, Any]", self.scope.get("auth")) or {}  # the middleware's
        self._registered = False
        self._closing = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_received = time.monotonic()
        self._rate_strikes = 0
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in subprotocols else None)
        if self.auth.get("error") or not getattr(self.user, "is_authenticated", False):
            # 4003 for every credential refused at connect, an expired token included: 4002 would
            # tell the client to reconnect and resume, which it would do forever with that token.
            await self.close_with("forbidden", self.auth.get("error") or "Authentication failed.", CLOSE_AUTH)
            return
        if self.requires_staff and not self.user.is_staff:
            await self.close_with("forbidden", "Staff only.", CLOSE_AUTH)
            return
        if not await get_limits().socket_open(self.user.pk, self.socket_id):
            await self.close_with(
                "rate_limited",
                f"At most {settings.NEXUS_WS_MAX_SOCKETS_PER_USER} sockets per user.",
                CLOSE_RATE_LIMITED,
            )
            return
        self._registered = True

        presence.socket_opened(self)
        await engine_ensure_started()
        await self.send(text_data=self.connection_frame())
        self._tasks.append(asyncio.get_running_loop().create_task(self._keepalive()))
        self._tasks.append(asyncio.get_running_loop().create_task(self._recheck_credentials()))
        try:
            await self.on_connected()
        except NexusError as exc:
            await self.close_with(
                exc.code, exc.message, CLOSE_INVALID_SESSION if isinstance(exc, NotFound) else CLOSE_GENERIC
            )
        except Exception:
            logger.exception("socket setup failed")
            await self.close_with("internal", "The server could not set up this connection.", CLOSE_INTERNAL)

    def connection_frame(self) -> str:
        """The first frame once connected (a dialect's socket may greet in its own shape)."""
        return protocol.control_frame(
            "connection",
            {
                "status": "connected",
                "user": {"id": self.user.pk, "username": self.user.get_username()},
                "protocol_version": protocol.PROTOCOL_VERSION,
                "limits": {
                    "messages_per_minute": settings.NEXUS_WS_MESSAGES_PER_MINUTE,
                    "max_sockets": settings.NEXUS_WS_MAX_SOCKETS_PER_USER,
                    "max_message_bytes": settings.NEXUS_WS_MAX_MESSAGE_BYTES,
                    "max_age_seconds": settings.NEXUS_WS_MAX_AGE_SECONDS,
                },
                "heartbeat_interval": settings.NEXUS_WS_PING_INTERVAL,
                "socket_id": self.socket_id,
            },
        )

    async def on_connected(self) -> None:
        """Endpoint-specific setup after authentication and limits."""

    async def close_with(
        self, code: str, message: str, close_code: int, *, retry_after: float | None = None
    ) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(Exception):
            await self.send(text_data=protocol.error_frame(code, message, retry_after=retry_after))
        try:
            await self.close(code=close_code)
        except Exception:
            # The server refused the close (a code it cannot send): the connection must end anyway,
            # or the client waits on a socket that delivers nothing. 4000 is always accepted.
            logger.exception("close %s refused; closing with %s", close_code, CLOSE_GENERIC)
            await self.close(code=CLOSE_GENERIC)

    async def send_error(
        self,
        code: str,
        message: str,
        details: Any = None,
        retry_after: float | None = None,
        client_message_id: str | None = None,
    ) -> None:
        await self.send(
            text_data=protocol.error_frame(code, message, details, retry_after, client_message_id)
        )

    async def disconnect(self, code: int) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._registered:
            presence.socket_closed(self)
            with contextlib.suppress(Exception):
                await get_limits().socket_close(self.user.pk, self.socket_id)
        await self.on_disconnected()

    async def on_disconnected(self) -> None:
        return None

    async def _keepalive(self) -> None:
        """Server ping every interval; close 4002 on silence after a ping, and at the max age."""
        started = time.monotonic()
        interval = settings.NEXUS_WS_PING_INTERVAL
        while not self._closing:
            await asyncio.sleep(
                min(interval, max(0.05, started + settings.NEXUS_WS_MAX_AGE_SECONDS - time.monotonic()))
            )
            now = time.monotonic()
            if now - started >= settings.NEXUS_WS_MAX_AGE_SECONDS:
                await self.close_with(
                    "forbidden", "Connection max age reached; reconnect and resume.", CLOSE_EXPIRED
                )
                return
            # Every tick, busy or silent: an entry not refreshed for a while counts as a dead
            # process's socket, and a busy user's sockets would drop out of the 5-socket limit.
            with contextlib.suppress(Exception):
                await get_limits().socket_refresh(self.user.pk, self.socket_id)
            if not self.app_pings or now - self._last_received < interval:
                continue
            ping_sent = time.monotonic()
            await self.send(text_data=protocol.control_frame("ping"))
            await asyncio.sleep(settings.NEXUS_WS_PONG_TIMEOUT)
            if self._last_received < ping_sent:
                await self.close_with("forbidden", "No answer to ping.", CLOSE_EXPIRED)
                return

    async def _recheck_credentials(self) -> None:
        """Every ``NEXUS_AUTH_RECHECK_SECONDS`` (and at the token's expiry), re-check what this
        socket was opened with: close 4003 once the user is deactivated or gone, the password
        changed or the cookie session ended (logout); 4002 once the token expired."""
        credentials = Credentials.from_socket_auth(self.auth, self.user)
        while not self._closing:
            await asyncio.sleep(credentials.seconds_to_next_check())
            try:
                verdict = await credentials.recheck()
            except Exception:  # the database is away: keep the socket, ask again next time
                logger.warning("credential re-check failed", exc_info=True)
                continue
            if verdict is not None:
                close_code, message = verdict
                await self.close_with("forbidden", message, close_code)
                return

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self._closing:
            return
        self._last_received = time.monotonic()
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.NEXUS_WS_MAX_MESSAGE_BYTES:
            await self.close_with(
                "message_too_large",
                f"Frames are limited to {settings.NEXUS_WS_MAX_MESSAGE_BYTES} bytes.",
                CLOSE_TOO_LARGE,
            )
            return
        try:
            frame = protocol.parse_client_frame(text_data if text_data is not None else bytes_data)
        except protocol.ProtocolError as exc:
            await self.send_error(exc.code, exc.message, exc.details)
            return
        if isinstance(frame, protocol.Ping):
            await self.send(text_data=protocol.control_frame("pong"))
            return
        if isinstance(frame, protocol.Pong):
            return
        decision = await get_limits().message_hit(self.user.pk)
        if not decision.allowed:
            self._rate_strikes += 1
            if self._rate_strikes >= RATE_STRIKES_BEFORE_CLOSE:
                await self.close_with(
                    "rate_limited", "Too many messages.", CLOSE_RATE_LIMITED, retry_after=decision.retry_after
                )
            else:
                await self.send_error(
                    "rate_limited",
                    f"At most {settings.NEXUS_WS_MESSAGES_PER_MINUTE} messages per minute.",
                    retry_after=decision.retry_after,
                )
            return
        self._rate_strikes = 0
        try:
            await self.handle(frame)
        except NexusError as exc:
            # the refused message named, so the client can give its text back (a paste too long)
            refused = getattr(frame, "client_message_id", None)
            await self.send_error(exc.code, exc.message, exc.details, exc.retry_after, refused)
        except Exception:
            logger.exception("frame handling failed")
            await self.send_error("internal", "The server failed to handle this frame.")

    async def handle(self, frame: protocol.ClientFrame) -> None:
        await self.send_error("unknown_type", "This endpoint does not take that frame.")


class ConversationSocket(BaseSocket):
    """``/ws/conversations/{id}/`` and ``/ws/{id}``, and ``/ws/agent/`` once initialized.

    Delivery is one task per socket (``_pump``), the only sender of conversation events. Every
    request for a position (``?last_seq=`` on connect, ``initialize`` with or without
    ``last_seq``, ``resume``) is handed to it and takes effect in ``_seek``, which never lets a
    socket send a seq twice or a lower seq after a higher one (docs/protocol.md, "Delivery,
    resume and resync").
    """

    bind_on_connect = True
    conversation: Any = None
    codec: Codec = NATIVE  # the dialect conversation events are rendered in (realtime/dialects/)

    async def on_connected(self) -> None:
        self._cursor = 0  # the next event delivered is the first one after this seq
        self._sent_to = 0  # the highest seq this socket has sent (0: none yet)
        self._sent_from: int | None = None  # it has sent every event in (_sent_from, _sent_to]
        # A list and a bare future, not a deque and an asyncio.Event: those allocate ~0.7 KiB each
        # up front, per idle socket.
        self._pending: list[LoggedEvent] = []
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None
        self._position: _Position | None = None  # the latest position request
        self._asked = self._serving = self._served = 0  # position requests: received, in hand, done
        self._catch_up = False  # live delivery was interrupted: read the log from the cursor
        self._watching: str | None = None
        self._delivering: Any = None  # the conversation the sender task delivers
        self._pump_task: asyncio.Task[None] | None = None
        if self.bind_on_connect:
            conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
            last_seq = _query_int(self.scope, "last_seq")
            await self._bind(conversation_id=conversation_id, last_seq=last_seq)

    async def _bind(
        self,
        *,
        conversation_id: Any = None,
        agent_id: Any = None,
        context: Any = None,
        last_seq: int | None = None,
    ) -> None:
        conversation = await conversation_bind(
            user=self.user, conversation_id=conversation_id, agent_id=agent_id, context=context
        )
        # An expired conversation is bound like any other: its history is sent, and the next
        # user_message revives it (docs/protocol.md, "Expiry").
        self.conversation = conversation
        state = await session_state(conversation=conversation)
        await self.send_state(state)
        if (
            last_seq is None
            and self._position is not None
            and self._position.conversation.pk == conversation.pk
        ):
            return  # the conversation it already delivers: it keeps its position
        # Without last_seq, a new binding starts from the state just sent.
        self._ask_position(
            _Position(
                conversation=conversation,
                last_seq=state["last_seq"] if last_seq is None else last_seq,
                claimed=last_seq is not None,
            )
        )

    async def send_state(self, state: dict[str, Any]) -> None:
        """A ``session_state`` frame within the frame limit (long messages cut, flagged)."""
        await self.send(text_data=protocol.session_state_frame(state, settings.NEXUS_WS_MAX_MESSAGE_BYTES))

    def _ask_position(self, position: _Position) -> None:
        """Hand a position request to the sender task; the latest request wins."""
        self._position = position
        self._asked += 1
        if self._pump_task is None:
            self._pump_task = asyncio.get_running_loop().create_task(self._pump())
            self._tasks.append(self._pump_task)
        self._wake()

    # -- delivery: one task per socket sends conversation events, in seq order, exactly once ------

    def _wake(self) -> None:
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _sleep_until_woken(self) -> None:
        while not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._woken = False

    def _on_events(self, conversation_id: str, events: list[LoggedEvent]) -> None:
        if conversation_id != self._watching:
            return
        if len(self._pending) > MAX_PENDING_EVENTS:
            # A socket this far behind reads from the log instead of holding events in memory.
            self._pending.clear()
            self._catch_up = True
        else:
            self._pending.extend(events)
        self._wake()

    def _on_log_lost(self) -> None:
        # Live delivery was interrupted (Redis restarted): read back from the log, or resync.
        self._catch_up = True
        self._wake()

    def _superseded(self) -> bool:
        """A newer position request arrived: what is in hand gives way to it."""
        return self._asked != self._serving

    async def _pump(self) -> None:
        while not self._closing:
            await self._sleep_until_woken()
            try:
                await self._deliver()
            except EventLogUnavailable:
                await asyncio.sleep(0.5)
                self._catch_up = True  # a position request not served yet is served first
                self._wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("event delivery failed")
                await self.close_with(
                    "internal", "Event delivery failed; reconnect and resume.", CLOSE_INTERNAL
                )
                return

    async def _deliver(self) -> None:
        """Position requests first, then catch-ups, then live events, until nothing is left."""
        while not self._closing:
            if self._served != self._asked:
                self._serving = self._asked
                assert self._position is not None
                await self._seek(self._position)
                self._served = self._serving
            elif self._catch_up:
                self._catch_up = False
                await self._read_log_to_end(resync=True)
            elif self._pending:
                # events that arrive while these are sent wait in the fresh list, in order
                batch, self._pending = self._pending, []
                await self._send_live(batch)
            else:
                return

    async def _seek(self, position: _Position) -> None:
        """The one place a position request takes effect: replay from the log, then live.

        The client asks for the events after ``position.last_seq``. A socket never sends a seq
        twice nor a lower one after a higher one, so it continues after the higher of that and
        the highest seq it already sent: what it sent is on its way to the client, in order.
        Before it sent anything, a request may move it anywhere. A claimed position below the
        events this socket has sent without a break is one it cannot honour without going back:
        it says so with a resync (the stored state), as when the log no longer holds the events.
        """
        self._catch_up = False  # the read below goes to the end of the log
        cid = str(position.conversation.pk)
        if cid != self._watching:
            log = get_event_log()
            if self._watching is None:
                log.on_lost(self._on_log_lost)
            else:
                log.unwatch(self._watching, self._on_events)
            self._watching = cid
            self._pending = []
            self._sent_to, self._sent_from = 0, None  # another conversation, another seq space
            log.watch(cid, self._on_events)  # watch first, then read: nothing falls in between
        self._delivering = position.conversation
        if position.claimed and self._sent_from is not None and position.last_seq < self._sent_from:
            await self._resync(
                "Events after that seq were not sent on this connection and cannot come after the ones "
                "it sent; here is the stored state."
            )
        else:
            self._cursor = max(position.last_seq, self._sent_to)
        # A position the log no longer covers: a claimed one resyncs; one taken from the
        # session_state just sent (the log lost or expired) needs nothing more.
        await self._read_log_to_end(resync=position.claimed)

    async def _send_live(self, batch: list[LoggedEvent]) -> None:
        for evt in batch:
            if self._superseded() or self._catch_up:
                return  # the log read that comes next holds the rest of this batch
            if evt.seq <= self._cursor:
                continue
            if evt.seq > self._cursor + 1:
                await self._read_log_to_end(resync=True)  # a gap: fill it from the log
                continue
            await self._forward(evt)

    async def _read_log_to_end(self, *, resync: bool) -> None:
        log = get_event_log()
        cid = self._watching
        assert cid is not None  # called once watching
        while not self._superseded():
            replay = await log.read_after(cid, self._cursor)
            if not replay.covered:
                if resync and not self._superseded():
                    await self._resync()
                return
            for evt in replay.events:
                if self._superseded():
                    return
                await self._forward(evt)
            if not replay.events or self._cursor >= replay.last_seq:
                return

    async def _forward(self, evt: LoggedEvent) -> None:
        if evt.seq <= self._cursor:  # sent already (the cursor is never below _sent_to)
            return
        # Every codec fits the frame limit (the native one an event logged before that rule too), so
        # no resume can meet a frame the server cannot send.
        for frame in self.codec.render(evt, frame_bytes=settings.NEXUS_WS_MAX_MESSAGE_BYTES):
            await self.send(text_data=frame)
        if self._sent_from is None or evt.seq != self._sent_to + 1:
            self._sent_from = evt.seq - 1
        self._cursor = self._sent_to = evt.seq
        ending = protocol.conversation_ending(evt)
        if ending == "session_expired":
            await self.close_with("forbidden", "The conversation expired after inactivity.", CLOSE_EXPIRED)
        elif ending == "conversation_deleted":
            # Deleted (runs.stopping.conversation_delete_with_runs): the session is gone, as for an
            # unknown conversation on connect.
            await self.close_with("not_found", "This conversation was deleted.", CLOSE_INVALID_SESSION)

    async def _resync(
        self, message: str = "Some events are no longer available; here is the stored state."
    ) -> None:
        """The events the client asked for cannot be sent: send the stored state instead, and
        continue after its last seq (or after what this socket sent, if that is higher: never back)."""
        await self.send(text_data=protocol.info_frame("resync", message))
        state = await session_state(conversation=self._delivering)
        await self.send_state(state)
        self._cursor = max(state["last_seq"], self._sent_to)

    async def on_disconnected(self) -> None:
        watching = getattr(self, "_watching", None)
        if watching:
            log = get_event_log()
            log.unwatch(watching, self._on_events)
            log.off_lost(self._on_log_lost)

    # -- client frames ---------------------------------------------------------------------------

    async def handle(self, frame: protocol.ClientFrame) -> None:
        match frame:
            case protocol.Initialize():
                try:
                    await self._bind(
                        conversation_id=frame.conversation_id
                        or (str(self.conversation.pk) if self.conversation else None),
                        agent_id=frame.agent_id,
                        context=frame.context,
                        last_seq=frame.last_seq,
                    )
                except NotFound as exc:
                    if not frame.conversation_id:
                        raise  # an unknown agent: the socket may initialize again
                    # An unknown conversation, or another user's: the session is invalid (4001),
                    # as on connect, with the same answer for both (no leak of existence).
                    await self.close_with(exc.code, exc.message, CLOSE_INVALID_SESSION)
                return
            case protocol.Resume():
                self._require_bound()
                self._ask_position(
                    _Position(conversation=self.conversation, last_seq=frame.last_seq, claimed=True)
                )
                return
        self._require_bound()
        cid = str(self.conversation.pk)
        match frame:
            case protocol.UserMessage():
                result = await message_send(
                    user=self.user,
                    conversation_id=cid,
                    content=frame.content,
                    client_message_id=frame.client_message_id,
                    agent_id=frame.agent_id,
                    context=frame.context,
                    attachments=frame.attachments,
                )
                await self.send(
                    text_data=protocol.control_frame(
                        "ack",
                        {
                            "client_message_id": frame.client_message_id,
                            "message_id": result.message_id,
                            "run_id": result.run_id,
                            "duplicate": result.duplicate,
                        },
                    )
                )
            case protocol.Stop():
                stopped = await run_stop(user=self.user, conversation_id=cid, run_id=frame.run_id)
                if not stopped:
                    await self.send(text_data=protocol.info_frame("nothing_to_stop", "No reply is running."))
            case protocol.ToolResult():
                await tool_result_submit(
                    user=self.user,
                    conversation_id=cid,
                    tool_call_id=frame.tool_call_id,
                    result=frame.result,
                    is_error=frame.is_error,
                )
                await self.send(text_data=protocol.control_frame("ack", {"toolCallId": frame.tool_call_id}))
            case protocol.Decision():
                decided = await approval_decide(
                    user=self.user,
                    conversation_id=cid,
                    tool_call_id=frame.tool_call_id,
                    approve=frame.approve,
                )
                await self.send(text_data=protocol.control_frame("ack", decided))
            case protocol.Branch():
                act = {
                    "regenerate": message_regenerate,
                    "continue": message_continue,
                    "select": message_choose,
                }
                branched = await act[frame.action](
                    user=self.user, conversation_id=cid, message_id=frame.message_id
                )
                await self.send(
                    text_data=protocol.control_frame(
                        "ack",
                        {
                            "action": branched.action,
                            "message_id": branched.message_id,
                            "run_id": branched.run_id,
                        },
                    )
                )
            case protocol.Edit():
                result = await message_send(
                    user=self.user,
                    conversation_id=cid,
                    content=frame.content,
                    client_message_id=frame.client_message_id,
                    edit_of=frame.message_id,
                )
                await self.send(
                    text_data=protocol.control_frame(
                        "ack",
                        {
                            "action": "edit",
                            "edited_id": frame.message_id,
                            "client_message_id": frame.client_message_id,
                            "message_id": result.message_id,
                            "run_id": result.run_id,
                            "duplicate": result.duplicate,
                        },
                    )
                )
            case protocol.Feedback():

                def _feedback() -> str:
                    message = message_get_for_user(user=self.user, message_id=frame.message_id)
                    if str(message.conversation_id) != cid:
                        raise NotFound("Message not found.")
                    return str(
                        message_feedback(message=message, rating=frame.rating, comment=frame.comment).pk
                    )

                message_id = await database_sync_to_async(_feedback)()
                await self.send(
                    text_data=protocol.control_frame(
                        "ack", {"message_id": message_id, "feedback": frame.rating}
                    )
                )

    def _require_bound(self) -> None:
        if self.conversation is None:
            raise ValidationFailed(
                "Send initialize first.", details={"type": "initialize is required first."}
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Position:
    """A request to deliver a conversation's events from after ``last_seq``. ``claimed``: the
    client named it (``last_seq`` given); otherwise it is the ``session_state`` just sent."""

    conversation: Any
    last_seq: int
    claimed: bool


class AgentSocket(ConversationSocket):
    """``/ws/agent/`` (seeds 003, 004): not bound to a conversation until ``initialize``, or until
    seed 003's ``query``, which needs none."""

    bind_on_connect = False

    async def handle(self, frame: protocol.ClientFrame) -> None:
        if isinstance(frame, protocol.Query) and (self.conversation is None or self.codec is SEED003):
            await self._seed003_query(frame)
            return
        await super().handle(frame)

    async def _seed003_query(self, frame: protocol.Query) -> None:
        """Seed 003: a ``query`` with no ``initialize`` before it makes this socket speak seed 003
        (replies as ``data_response``, no ``ack``), bound on first use to a new conversation with
        the user's default agent (docs/dialects.md, "Seed 003")."""
        if self.conversation is None:
            conversation = await conversation_bind(user=self.user, agent_id=frame.agent_id)
            self.codec, self.conversation = SEED003, conversation
            state = await session_state(conversation=conversation)
            self._ask_position(
                _Position(conversation=conversation, last_seq=state["last_seq"], claimed=False)
            )
        await message_send(
            user=self.user,
            conversation_id=str(self.conversation.pk),
            content=frame.content,
            client_message_id=frame.client_message_id,
            context=frame.context,
        )


def _query_int(scope: Mapping[str, Any], name: str) -> int | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    if not values:
        return None
    try:
        value = int(values[0])
    except ValueError:
        return None
    return value if value >= 0 else None
