"""Realtime HTTP endpoints: invoke (wait for the whole reply), stop, and the SSE streams.

Async Django views: a reply can take minutes, and a sync view would hold Django's one
thread-sensitive worker thread for all of it. They authenticate like the REST API (JWT bearer or
the session), answer errors in the API's one shape, and call the same services as the sockets.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal, overload

import orjson
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from agents.selectors import agent_get_for_user
from conversations.models import Conversation, Message, Participant
from conversations.selectors import conversation_get_for_user, message_get_for_user
from conversations.services import conversation_create, conversation_history_seed
from core.apikeys import is_api_key, user_from_api_key
from core.auth import AuthenticationFailed, User, bearer_token, single_user_for, user_from_access_token
from core.errors import NexusError, NotFound, TooLarge, ValidationFailed
from core.exceptions import error_body, retry_after_seconds
from realtime import protocol
from realtime.connections import StreamGuard
from realtime.dialects import Codec
from realtime.dialects.native import NATIVE
from runs.approvals import approval_decide
from runs.eventlog import get_event_log
from runs.eventlog.base import LoggedEvent
from runs.models import Run
from runs.quotas import content_admit
from runs.sending import message_send
from runs.session_state import engine_ensure_started
from runs.stopping import run_stop

logger = logging.getLogger(__name__)
KEEPALIVE_SECONDS = 15.0
INVOKE_TIMEOUT = 600.0
_INVOKE_READS = frozenset({"run_started", "agent_message", "run_finished"})  # what invoke answers with


def _error(
    status: int, detail: str, code: str, *, errors: Any = None, retry_after: float | None = None
) -> JsonResponse:
    response = JsonResponse(error_body(detail, code, errors=errors, retry_after=retry_after), status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after_seconds(retry_after))
    return response


def _error_response(exc: NexusError) -> JsonResponse:
    details = exc.details if isinstance(exc.details, dict) else None
    return _error(exc.http_status, exc.message, exc.code, errors=details, retry_after=exc.retry_after)


async def _caller(request: HttpRequest) -> tuple[User | None, str | None]:
    """(user, method): the bearer's user (a JWT, or a personal API key with the ``api`` scope),
    or the session's, or (NEXUS_AUTH=off) the single user's; (None, None) when none."""
    token = bearer_token(request.headers.get("Authorization"))
    if token and is_api_key(token):
        # a personal API key with the "api" scope (docs/v1.md); without it, Forbidden (403)
        try:
            return await sync_to_async(user_from_api_key)(token, scope="api"), "api_key"
        except AuthenticationFailed:
            return None, None
    if token:
        try:
            return await sync_to_async(user_from_access_token)(token), "jwt"
        except AuthenticationFailed:
            return None, None
    user = await request.auser()
    if user.is_authenticated and user.is_active:
        return user, "session"
    # NEXUS_AUTH=off: no credentials at all is the single local user (never with a bad token, above).
    single = await sync_to_async(single_user_for)(
        origin=request.headers.get("Origin"), host=request.headers.get("Host")
    )
    return (single, "single_user") if single is not None else (None, None)


def _csrf_failure(request: HttpRequest) -> HttpResponse | None:
    """Session-authenticated unsafe requests need Django's CSRF token (bearer ones cannot be forged)."""
    # process_view never calls the view it is given (None here): it only decides
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise TooLarge("The request body is too large.") from None
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ValidationFailed("The body must be a JSON object.")
    return body


AsyncView = Callable[..., Coroutine[Any, Any, HttpResponseBase]]


def authenticated_endpoint(view: AsyncView) -> AsyncView:
    """A plain async Django view, authenticated as the REST API authenticates (a JWT bearer, or
    the session with its CSRF token on unsafe methods) and answering every ``NexusError`` in the
    API's one error shape. ``view`` is called with the caller as ``user=``.

    Not DRF's ``APIView``: DRF runs its views synchronously, and these stream for minutes."""

    @functools.wraps(view)
    async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        try:
            user, method = await _caller(request)
        except NexusError as exc:
            return _error_response(exc)
        if user is None:
            return _error(
                401, "Authentication credentials were not provided or are invalid.", "not_authenticated"
            )
        unsafe = request.method not in ("GET", "HEAD", "OPTIONS")
        if method == "session" and unsafe and await sync_to_async(_csrf_failure)(request) is not None:
            return _error(
                403, "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken.", "csrf_failed"
            )
        try:
            return await view(request, *args, user=user, **kwargs)
        except NexusError as exc:
            return _error_response(exc)

    # Django's own CSRF check would answer a bearer request 403: the check above is the one.
    return csrf_exempt(endpoint)


@overload
def _string(
    body: dict[str, Any], *names: str, required: Literal[True] = True, limit: int | None = None
) -> str: ...
@overload
def _string(body: dict[str, Any], *names: str, required: bool, limit: int | None = None) -> str | None: ...
def _string(body: dict[str, Any], *names: str, required: bool = True, limit: int | None = None) -> str | None:
    """The first of ``names`` present, a non-empty string of at most ``limit`` characters (a
    message's content is measured by the run service's quota instead, the same on every path)."""
    for name in names:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise ValidationFailed(
                    f"{name} must be a non-empty string.", details={name: ["A non-empty string."]}
                )
            if limit is not None and len(value) > limit:
                raise ValidationFailed(
                    f"{name} is longer than {limit} characters.",
                    details={name: [f"At most {limit} characters."]},
                )
            if "\x00" in value:  # PostgreSQL stores none: refused here, not a 500 there
                raise ValidationFailed(
                    "NUL characters are not allowed.", details={name: ["Contains a NUL character."]}
                )
            return value
    if required:
        raise ValidationFailed(f"{names[0]} is required.", details={names[0]: ["This field is required."]})
    return None


def _optional_uuid(body: dict[str, Any], *names: str) -> str | None:
    """An optional id in the body: absent or null, or a UUID string (anything else is a 400, never
    taken for "absent")."""
    for name in names:
        value = body.get(name)
        if value is not None:
            try:
                parsed = str(uuid.UUID(value))
            except (TypeError, ValueError, AttributeError):
                parsed = None
            if parsed is None or parsed != value.lower():  # the hyphenated form only, as the schema says
                raise ValidationFailed(f"{name} must be a UUID.", details={name: ["A UUID."]})
            return parsed
    return None


class _Follower:
    """Follows one conversation's log from a seq: replay, then live, no gap, no duplicate."""

    def __init__(self, conversation_id: str, after_seq: int) -> None:
        self.conversation_id = conversation_id
        self.cursor = after_seq
        self.pending: list[LoggedEvent] = []
        self.wakeup = asyncio.Event()
        self.log = get_event_log()

    def _on_events(self, _cid: str, events: list[LoggedEvent]) -> None:
        self.pending.extend(events)
        self.wakeup.set()

    async def __aenter__(self) -> _Follower:
        await engine_ensure_started()
        self.log.watch(self.conversation_id, self._on_events)
        self.wakeup.set()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.log.unwatch(self.conversation_id, self._on_events)

    async def events(self, *, keepalive: float | None) -> AsyncIterator[LoggedEvent | None]:
        """Yields events in order; None when ``keepalive`` seconds pass with nothing to send."""
        first = True
        while True:
            if not first:
                try:
                    await asyncio.wait_for(self.wakeup.wait(), keepalive)
                except TimeoutError:
                    yield None
                    continue
            first = False
            self.wakeup.clear()
            batch, self.pending = self.pending, []
            if not batch or batch[0].seq > self.cursor + 1:
                replay = await self.log.read_after(self.conversation_id, self.cursor)
                if not replay.covered:
                    raise ValidationFailed(
                        "The event log no longer covers that seq; reload the conversation."
                    )
                batch = replay.events + batch
                if replay.events and replay.events[-1].seq < replay.last_seq:
                    self.wakeup.set()  # more pages to read
            for evt in batch:
                if evt.seq == self.cursor + 1:
                    self.cursor = evt.seq
                    yield evt
                elif evt.seq > self.cursor + 1:
                    self.wakeup.set()  # a gap appeared: the next pass reads it from the log
                    break


def _sse(evt: LoggedEvent, codec: Codec = NATIVE) -> bytes:
    # The same frames as the WebSocket's, within the same limit (docs/protocol.md, "Frame size");
    # a dialect's codec may render an event as none or several (each carries the event's seq).
    frames = codec.render(evt, frame_bytes=settings.NEXUS_WS_MAX_MESSAGE_BYTES)
    return b"".join(protocol.sse_event(frame, event_id=evt.seq) for frame in frames)


def _ends_stream(evt: LoggedEvent, until_run: str | None) -> bool:
    """Whether ``evt`` is a stream's last: its conversation was deleted (nothing more will come),
    or it is the ``run_finished`` of the run the stream follows."""
    if protocol.conversation_ending(evt) == "conversation_deleted":
        return True
    if until_run is None or evt.kind != "run_finished":
        return False
    return protocol.event_fields(evt.payload)[1].get("run_id") == until_run


async def _stream(
    conversation_id: str, after_seq: int, *, until_run: str | None, codec: Codec = NATIVE
) -> AsyncIterator[bytes]:
    yield protocol.sse_comment("connected")
    try:
        async with _Follower(conversation_id, after_seq) as follower:
            async for evt in follower.events(keepalive=KEEPALIVE_SECONDS):
                if evt is None:
                    yield protocol.sse_comment("keep-alive")
                    continue
                data = _sse(evt, codec)
                if data:
                    yield data
                if _ends_stream(evt, until_run):
                    return
    except NexusError as exc:
        render_error = getattr(codec, "render_error", None)
        frame = render_error(exc.code, exc.message) if render_error else None
        yield protocol.sse_event(frame or protocol.error_frame(exc.code, exc.message), event_name="error")


def _sse_response(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


# --- endpoints -------------------------------------------------------------------------------


def _conversation_for_run(
    user: User, agent_id: Any, conversation_id: Any, history: Any
) -> tuple[str, int, bool]:
    """(conversation id, its stored last seq, whether this request created it)."""
    agent = agent_get_for_user(user=user, agent_id=agent_id)
    # A malformed history is refused even beside a conversation_id (which makes it unused): a body
    # is checked whole, as the schema promises.
    if history is not None:
        if not isinstance(history, list) or not all(
            isinstance(h, dict)
            and h.get("role") in ("user", "assistant")
            and isinstance(h.get("content"), str)
            for h in history
        ):
            raise ValidationFailed(
                "history is a list of {role: user|assistant, content}.", details={"history": ["Invalid."]}
            )
        for item in history:
            content_admit(item["content"], field="history")
    if conversation_id:
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        if not Participant.objects.filter(conversation=conversation, agent=agent).exists():
            raise ValidationFailed(
                "That agent is not in this conversation.", details={"agent_id": ["Not a participant."]}
            )
        return str(conversation.pk), conversation.last_seq, False
    conversation = conversation_create(owner=user, participants=[(agent, "primary")])
    if history is not None:
        conversation_history_seed(conversation=conversation, agent=agent, history=history)
    return str(conversation.pk), 0, True


def _conversation_discard(conversation_id: str) -> None:
    Conversation.objects.filter(pk=conversation_id).delete()


async def _send(user: User, conversation_id: str, created: bool, **send: Any) -> Any:
    """``message_send``; a conversation this request created is deleted again when the send is
    refused (a quota, bad input), so a refused request leaves nothing behind."""
    try:
        return await message_send(user=user, conversation_id=conversation_id, **send)
    except NexusError:
        if created:
            await sync_to_async(_conversation_discard)(conversation_id)
        raise


async def _last_seq(conversation_id: str, stored: int) -> int:
    return max(await get_event_log().last_seq(conversation_id), stored)


@require_http_methods(["POST"])
@authenticated_endpoint
async def agent_run(request: HttpRequest, agent_id: str, *, user: User) -> HttpResponseBase:
    """``POST /api/agents/{id}/run/`` (seed 002): send ``query`` and stream the run over SSE."""
    body = _json_body(request)
    query = _string(body, "query", "message")
    client_message_id = _string(body, "client_message_id", required=False, limit=protocol.MAX_ID_CHARS)
    content_admit(query, field="query")
    guard = await StreamGuard.open(request, user)  # the connection cap, before the run
    conversation_id, stored_seq, created = await sync_to_async(_conversation_for_run)(
        user, agent_id, _optional_uuid(body, "conversation_id"), body.get("history")
    )
    after = await _last_seq(conversation_id, stored_seq)
    result = await _send(
        user,
        conversation_id,
        created,
        content=query,
        client_message_id=client_message_id,
        agent_id=str(agent_id),
        attachments=body.get("attachments"),  # stored file ids (docs/files.md, "Attachments")
    )
    if created or (result.duplicate and result.run_id):
        # A repeated client_message_id streams the first send's run again, from its message on:
        # its events were logged before this request began. A new conversation with a stored past
        # (``history``): its log begins past a gap, at this message.
        after = await sync_to_async(_seq_before)(result.message_id, after)
    response = _sse_response(guard.wrap(_stream(conversation_id, after, until_run=result.run_id)))
    response["X-Conversation-Id"] = conversation_id
    return response


@require_http_methods(["GET"])
@authenticated_endpoint
async def conversation_events(request: HttpRequest, conversation_id: str, *, user: User) -> HttpResponseBase:
    """``GET /api/conversations/{id}/events/``: every event after ``Last-Event-ID`` / ``?after_seq=``."""
    conversation = await sync_to_async(conversation_get_for_user)(user=user, conversation_id=conversation_id)
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after_seq")
    if raw is None:
        after = await _last_seq(str(conversation.pk), conversation.last_seq)
    else:
        try:
            after = int(raw)
        except ValueError:
            raise ValidationFailed(
                "after_seq must be an integer.", details={"after_seq": ["An integer."]}
            ) from None
        if after < 0:
            raise ValidationFailed(
                "after_seq must not be negative.", details={"after_seq": ["Non-negative."]}
            )
    guard = await StreamGuard.open(request, user)
    return _sse_response(guard.wrap(_stream(str(conversation.pk), after, until_run=None)))


def _seq_before(message_id: str, fallback: int) -> int:
    """The seq just before a stored message's (``fallback`` while it has none yet)."""
    seq = Message.objects.filter(pk=message_id).values_list("seq", flat=True).first()
    return seq - 1 if seq else fallback


def _run_reply(run_id: str) -> dict[str, Any]:
    """A run's status, error and reply as stored, in the shapes of its ``agent_message`` and
    ``run_finished`` events."""
    run = Run.objects.select_related("reply_message").get(pk=run_id)
    reply = run.reply_message
    return {
        "status": run.status,
        "error": run.error or None,
        "messageId": str(reply.pk) if reply else None,
        "message_id": str(reply.pk) if reply else None,
        "content": reply.content if reply else "",
    }


def _stored_content(user: User, message_id: str) -> str:
    return message_get_for_user(user=user, message_id=message_id).content


@require_http_methods(["POST"])
@authenticated_endpoint
async def invoke(request: HttpRequest, *, user: User) -> HttpResponse:
    """``POST /api/invoke/`` (seed 000): run the agent and answer with the whole reply. The events
    stream to every socket watching the conversation meanwhile."""
    body = _json_body(request)
    agent_id = _optional_uuid(body, "agent_id", "agentId")
    if agent_id is None:
        raise ValidationFailed("agent_id is required.", details={"agent_id": ["This field is required."]})
    message = _string(body, "message", "query")
    client_message_id = _string(body, "client_message_id", required=False, limit=protocol.MAX_ID_CHARS)
    content_admit(message, field="message")
    conversation_id, stored_seq, created = await sync_to_async(_conversation_for_run)(
        user, agent_id, _optional_uuid(body, "conversation_id", "conversationId"), None
    )
    after = await _last_seq(conversation_id, stored_seq)
    async with _Follower(conversation_id, after) as follower:
        result = await _send(
            user,
            conversation_id,
            created,
            content=message,
            agent_id=agent_id,
            client_message_id=client_message_id,
        )
        reply_id: str | None = None
        final: dict[str, Any] | None = None
        finished: dict[str, Any] | None = None
        if result.duplicate and result.run_id:
            # A repeated client_message_id answers with the first send's run, whose start (and
            # maybe end) the log had before this follower began: read what is stored.
            stored = await sync_to_async(_run_reply)(result.run_id)
            reply_id = stored["messageId"]
            if stored["status"] not in ("queued", "running"):
                final = stored
                finished = {"run_id": result.run_id, **stored}
        if finished is None:
            try:
                async with asyncio.timeout(INVOKE_TIMEOUT):
                    async for evt in follower.events(keepalive=None):
                        if evt is None or evt.kind not in _INVOKE_READS:
                            continue
                        kind, fields = protocol.event_fields(evt.payload)
                        if kind == "run_started" and fields.get("run_id") == result.run_id:
                            reply_id = fields.get("message_id")
                        elif kind == "agent_message" and reply_id and fields.get("messageId") == reply_id:
                            final = fields
                        elif kind == "run_finished" and fields.get("run_id") == result.run_id:
                            finished = fields
                            break
            except TimeoutError:
                return _error(504, "The reply took too long; it continues and is stored.", "timeout")
    status = (finished or {}).get("status")
    response = (final or {}).get("content", "")
    if final and final.get("content_truncated"):
        # The event carries what fits in a frame; this answer is HTTP: the stored reply, whole.
        response = await sync_to_async(_stored_content)(user, final["messageId"])
    message_id = (final or {}).get("messageId") or (finished or {}).get("message_id")
    return JsonResponse(
        {
            "success": status == "completed",
            "response": response,
            "conversation_id": conversation_id,
            "message_id": message_id,
            # seed 000's names for the same two ids
            "conversationId": conversation_id,
            "messageId": message_id,
            "run_id": result.run_id,
            "status": status,
            "error": (finished or {}).get("error"),
        }
    )


@require_http_methods(["POST"])
@authenticated_endpoint
async def conversation_stop(request: HttpRequest, conversation_id: str, *, user: User) -> HttpResponse:
    """``POST /api/conversations/{id}/stop/``: the REST twin of the ``stop`` frame."""
    body = _json_body(request)
    stopped = await run_stop(
        user=user, conversation_id=conversation_id, run_id=_optional_uuid(body, "run_id")
    )
    return JsonResponse({"stopped": stopped, "count": len(stopped)})


@require_http_methods(["POST"])
@authenticated_endpoint
async def approval_decide_view(
    request: HttpRequest, conversation_id: str, tool_call_id: str, *, user: User
) -> HttpResponse:
    """``POST /api/conversations/{id}/approvals/{toolCallId}/`` ``{"decision": "approve"|"deny"}``:
    the REST twin of the ``approve`` and ``deny`` frames (the first decision wins; 409 after)."""
    body = _json_body(request)
    decision = body.get("decision")
    if decision not in ("approve", "deny"):
        raise ValidationFailed(
            "decision is approve or deny.", details={"decision": ["Expected approve or deny."]}
        )
    if len(tool_call_id) > protocol.MAX_ID_CHARS or "\x00" in tool_call_id:
        raise NotFound("No tool call waits for approval with that id in this conversation.")
    decided = await approval_decide(
        user=user, conversation_id=conversation_id, tool_call_id=tool_call_id, approve=decision == "approve"
    )
    return JsonResponse(decided)
