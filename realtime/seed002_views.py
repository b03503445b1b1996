"""Seed 002's conversation face (docs/dialects.md, "Seed 002"): ``POST /api/agent/run`` over SSE
and the ``/api/conversation/*`` family in the seed's ``{code, message, data}`` envelope.

Every view calls the services the native API calls (``conversations.services``,
``runs.sending.message_send``, ``runs.stopping.conversation_delete_with_runs``) and streams with the
native SSE follower (``http_views._stream``) through the seed 002 codec
(``realtime.dialects.seed002``). Errors answer in the envelope too, with the HTTP status as
``code`` and Nexus's error code as ``error``. Times are epoch milliseconds.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from agents.models import Agent, AgentStatus
from agents.provider_config import complete_title
from agents.selectors import agent_get_for_user, agent_queryset_for_user
from conversations import services
from conversations.models import Conversation, Message, MessageRole, MessageType
from conversations.selectors import (
    conversation_get_for_user,
    conversation_participants,
    message_get_for_user,
    message_list,
)
from core.auth import User
from core.errors import NexusError, NotFound, ValidationFailed
from core.exceptions import retry_after_seconds
from realtime import http_views as native
from realtime import protocol
from realtime.connections import StreamGuard
from realtime.dialects.seed002 import SEED002
from realtime.dialects.seed002 import message as stream_message
from runs.quotas import content_admit
from runs.stopping import conversation_delete_with_runs

# The seed's opinion_flag values (its client's like/dislike) and Nexus's ratings.
OPINIONS = {"Y": "positive", "N": "negative", "positive": "positive", "negative": "negative"}
FLAGS = {"positive": "Y", "negative": "N"}
SOURCE_TYPES = ("all", "search", "image")
MAX_MINIO_FILES = 20


def ok(data: Any) -> JsonResponse:
    return JsonResponse({"code": 0, "message": "success", "data": data})


def failed(
    status: int, text: str, code: str, *, details: Any = None, retry_after: float | None = None
) -> JsonResponse:
    body: dict[str, Any] = {"code": status, "message": text, "data": None, "error": code}
    if details is not None:
        body["details"] = details
    response = JsonResponse(body, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after_seconds(retry_after))
    return response


def endpoint(*methods: str) -> Callable[[Any], Any]:
    """A seed 002 view: the methods it answers, authentication as the native endpoints (a JWT
    bearer, or the session with its CSRF token on unsafe methods), every error in the envelope."""

    def wrap(view: Any) -> Any:
        @functools.wraps(view)
        async def run(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method not in methods:
                return failed(405, f"Use {' or '.join(methods)}.", "method_not_allowed")
            user, how = await native._caller(request)
            if user is None:
                return failed(
                    401, "Authentication credentials were not provided or are invalid.", "not_authenticated"
                )
            unsafe = request.method not in ("GET", "HEAD")
            if how == "session" and unsafe and await sync_to_async(native._csrf_failure)(request) is not None:
                return failed(
                    403,
                    "CSRF check failed: send the csrftoken cookie's value in X-CSRFToken.",
                    "csrf_failed",
                )
            try:
                return await view(request, *args, user=user, **kwargs)
            except NexusError as exc:
                details = exc.details if isinstance(exc.details, dict) else None
                return failed(
                    exc.http_status, exc.message, exc.code, details=details, retry_after=exc.retry_after
                )

        return csrf_exempt(run)

    return wrap


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def default_agent(user: User) -> Agent:
    """The agent a seed 002 client gets when it names none: the first active agent the user may
    use, their own before the shared ones, by name then age."""
    agent = (
        agent_queryset_for_user(user)
        .filter(status=AgentStatus.ACTIVE)
        .annotate(
            mine=Case(
                When(owner_id=user.pk, then=Value(0)),
                When(owner__isnull=True, then=Value(1)),
                default=Value(2),
                output_field=IntegerField(),
            )
        )
        .order_by("mine", "name", "created_at")
        .first()
    )
    if agent is None:
        raise ValidationFailed(
            "You have no active agent: create one first.", details={"agent_id": ["No agent to use."]}
        )
    return agent


def _conversation_item(conversation: Conversation) -> dict[str, Any]:
    return {
        "conversation_id": str(conversation.pk),
        "conversation_title": conversation.title,
        "create_time": epoch_ms(conversation.created_at),
        "update_time": epoch_ms(conversation.updated_at),
    }


def _text(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise ValidationFailed(f"{name} is required.", details={name: ["This field is required."]})
        return None
    if not isinstance(value, str):
        raise ValidationFailed(f"{name} must be a string.", details={name: ["A string."]})
    return value


def _conversation(user: User, body: dict[str, Any]) -> Conversation:
    conversation_id = body.get("conversation_id")
    if conversation_id is None or conversation_id == "":
        raise ValidationFailed(
            "conversation_id is required.", details={"conversation_id": ["This field is required."]}
        )
    return conversation_get_for_user(user=user, conversation_id=str(conversation_id))


# --- /api/conversation/* -----------------------------------------------------------------------


def _create(user: User, body: dict[str, Any]) -> dict[str, Any]:
    title = _text(body, "title", required=False) or ""
    agent_id = native._optional_uuid(body, "agent_id")
    agent = agent_get_for_user(user=user, agent_id=agent_id) if agent_id else default_agent(user)
    conversation = services.conversation_create(owner=user, participants=[(agent, "primary")], title=title)
    return _conversation_item(conversation)


@endpoint("PUT", "POST")
async def conversation_create(request: HttpRequest, *, user: User) -> JsonResponse:
    """``PUT /api/conversation/create``: ``{title}`` -> the new conversation (with the default agent,
    or ``agent_id``)."""
    return ok(await sync_to_async(_create)(user, native._json_body(request)))


def _list(user: User) -> list[dict[str, Any]]:
    mine = Conversation.objects.filter(owner=user).order_by("-updated_at", "-created_at")
    return [_conversation_item(c) for c in mine]


@endpoint("GET")
async def conversation_list(request: HttpRequest, *, user: User) -> JsonResponse:
    """``GET /api/conversation/list``: the user's conversations, most recent first."""
    return ok(await sync_to_async(_list)(user))


def _rename(user: User, body: dict[str, Any]) -> bool:
    conversation = _conversation(user, body)
    name = _text(body, "name", required=True) or ""
    services.conversation_update(conversation=conversation, title=name)
    return True


@endpoint("POST")
async def conversation_rename(request: HttpRequest, *, user: User) -> JsonResponse:
    """``POST /api/conversation/rename``: ``{conversation_id, name}`` -> ``true``."""
    return ok(await sync_to_async(_rename)(user, native._json_body(request)))


def _units(message: Message) -> list[dict[str, Any]]:
    kind = "query" if message.role == MessageRole.USER else "final_answer"
    return [{"type": kind, "content": message.content}]


def _history(user: User, conversation_id: str) -> dict[str, Any]:
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    messages = [
        m
        for m in message_list(conversation=conversation)
        if m.role in (MessageRole.USER, MessageRole.AGENT) and m.type == MessageType.MESSAGE
    ]
    return {
        "conversation_id": str(conversation.pk),
        "create_time": epoch_ms(conversation.created_at),
        "message": [
            {
                "role": "user" if m.role == MessageRole.USER else "assistant",
                "message": _units(m),
                "message_id": str(m.pk),
                "opinion_flag": FLAGS.get(m.opinion or ""),
                "picture": [i for i in (m.metadata or {}).get("images") or [] if isinstance(i, str)],
                "search": [
                    _source_item(s) for s in (m.metadata or {}).get("sources") or [] if isinstance(s, dict)
                ],
            }
            for m in messages
        ],
    }


def _delete(user: User, conversation_id: str) -> bool:
    conversation_delete_with_runs(user=user, conversation_id=conversation_id)
    return True


@endpoint("GET", "DELETE")
async def conversation_detail(request: HttpRequest, conversation_id: str, *, user: User) -> JsonResponse:
    """``GET /api/conversation/{id}``: the history; ``DELETE``: delete it (and stop its replies)."""
    if request.method == "DELETE":
        return ok(await sync_to_async(_delete)(user, conversation_id))
    return ok(await sync_to_async(_history)(user, conversation_id))


def _sources(user: User, body: dict[str, Any]) -> dict[str, Any]:
    conversation = _conversation(user, body)
    message_id = _text(body, "message_id", required=False)
    message: Message | None = None
    if message_id:
        message = message_get_for_user(user=user, message_id=message_id)
        if message.conversation_id != conversation.pk:
            raise NotFound("Message not found.")
    kind = body.get("type") or "all"
    if kind not in SOURCE_TYPES:
        raise ValidationFailed("Invalid type.", details={"type": [f"One of {list(SOURCE_TYPES)}."]})
    # The knowledge search stores a reply's sources with it (metadata "sources", "images"); without
    # a message_id, those of every reply of the conversation, oldest first.
    if message is not None:
        messages = [message]
    else:
        messages = [m for m in message_list(conversation=conversation) if m.role == MessageRole.AGENT]
    searches: list[dict[str, Any]] = []
    images: list[str] = []
    for m in messages:
        meta = m.metadata or {}
        searches += [_source_item(s) for s in meta.get("sources") or [] if isinstance(s, dict)]
        images += [i for i in meta.get("images") or [] if isinstance(i, str)]
    return {
        "searches": searches if kind in ("all", "search") else [],
        "images": images if kind in ("all", "image") else [],
    }


def _source_item(source: dict[str, Any]) -> dict[str, Any]:
    """A stored source in the seed's shape: its ``score_details`` say ``accuracy`` where the
    search says ``accurate``."""
    details = source.get("score_details") or {}
    return {
        "title": source.get("title") or "",
        "text": source.get("text") or "",
        "source_type": source.get("source_type") or "",
        "url": source.get("url") or "",
        "filename": source.get("filename") or "",
        "published_date": source.get("published_date") or "",
        "score": source.get("score") or 0.0,
        "score_details": {
            "accuracy": details.get("accuracy", details.get("accurate", 0.0)),
            "semantic": details.get("semantic", 0.0),
        },
    }


@endpoint("POST")
async def conversation_sources(request: HttpRequest, *, user: User) -> JsonResponse:
    """``POST /api/conversation/sources``: ``{conversation_id, message_id, type}`` -> the sources."""
    return ok(await sync_to_async(_sources)(user, native._json_body(request)))


def _generate_title(user: User, body: dict[str, Any]) -> str:
    conversation = _conversation(user, body)
    history = body.get("history")
    if history is not None and not isinstance(history, list):
        raise ValidationFailed("history must be a list.", details={"history": ["A list."]})
    title, _source = services.conversation_generate_title(conversation=conversation, complete=complete_title)
    return title


@endpoint("POST")
async def conversation_generate_title(request: HttpRequest, *, user: User) -> JsonResponse:
    """``POST /api/conversation/generate_title``: title the conversation from its stored messages
    (the body's ``history`` is the client's copy of them) -> the title."""
    return ok(await sync_to_async(_generate_title)(user, native._json_body(request)))


def _update_opinion(user: User, body: dict[str, Any]) -> bool:
    message_id = _text(body, "message_id", required=True) or ""
    opinion = body.get("opinion")
    if opinion in (None, ""):
        rating = None
    elif opinion in OPINIONS:
        rating = OPINIONS[opinion]
    else:
        raise ValidationFailed("Invalid opinion.", details={"opinion": ["Y, N, or null to clear."]})
    message = message_get_for_user(user=user, message_id=message_id)
    services.message_feedback(message=message, rating=rating)
    return True


@endpoint("POST")
async def message_update_opinion(request: HttpRequest, *, user: User) -> JsonResponse:
    """``POST /api/conversation/message/update_opinion``: ``{message_id, opinion}`` -> ``true``."""
    return ok(await sync_to_async(_update_opinion)(user, native._json_body(request)))


# --- /api/agent/run ------------------------------------------------------------------------------


def _run_agent_id(user: User, agent_id: str | None, conversation_id: str | None) -> str:
    """The agent that answers: the body's, else the conversation's own, else the default."""
    if agent_id is not None:
        return agent_id
    if conversation_id is not None:
        conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
        agents = conversation_participants(conversation=conversation)
        if agents:
            return str(agents[0].pk)
    return str(default_agent(user).pk)


def _minio_files(body: dict[str, Any]) -> list[Any]:
    files = body.get("minio_files")
    if files is None:
        return []
    if not isinstance(files, list) or len(files) > MAX_MINIO_FILES:
        raise ValidationFailed(
            "minio_files must be a list.", details={"minio_files": [f"A list of at most {MAX_MINIO_FILES}."]}
        )
    return files


async def _run_stream(head: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    first = True
    async for piece in body:
        yield piece
        if first:  # after the stream's greeting: which conversation and run this is
            first = False
            yield protocol.sse_event(head)


@endpoint("POST")
async def agent_run(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /api/agent/run``: ``{query, history, minio_files, conversation_id?, agent_id?}`` ->
    the run over SSE in the seed's messages. The run is an ordinary run of the conversation: a
    client that drops the stream does not stop it (its reply is stored and is in the history)."""
    body = native._json_body(request)
    query = native._string(body, "query")
    content_admit(query, field="query")
    minio_files = _minio_files(body)  # the user's stored files, by object name: attached to the query
    conversation_id = native._optional_uuid(body, "conversation_id")
    agent_id = await sync_to_async(_run_agent_id)(
        user, native._optional_uuid(body, "agent_id"), conversation_id
    )
    guard = await StreamGuard.open(request, user)
    conversation_id, stored_seq, created = await sync_to_async(native._conversation_for_run)(
        user, agent_id, conversation_id, body.get("history")
    )
    after = await native._last_seq(conversation_id, stored_seq)
    result = await native._send(
        user, conversation_id, created, content=query, agent_id=agent_id, attachment_names=minio_files or None
    )
    if created:  # a new conversation with a stored past (history): its log begins at this message
        after = await sync_to_async(native._seq_before)(result.message_id, after)
    head = stream_message(
        "conversation",
        {"conversation_id": conversation_id, "message_id": result.message_id, "run_id": result.run_id},
    )
    stream = native._stream(conversation_id, after, until_run=result.run_id, codec=SEED002)
    response = native._sse_response(guard.wrap(_run_stream(head, stream)))
    response["X-Conversation-Id"] = conversation_id
    return response
