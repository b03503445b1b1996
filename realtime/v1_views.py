"""The OpenAI-compatible front door, ``/v1`` (SPEC section 11; docs/v1.md).

``GET /v1/models`` lists the caller's agents as models; ``POST /v1/chat/completions`` and
``POST /v1/responses`` start ordinary Nexus runs (``message_send``, ``tool_result_submit``) and
answer from the conversation's event log, as the other SSE endpoints do (``http_views._Follower``),
rendered by the codec ``realtime.dialects.openai_v1``. Authentication: ``Authorization: Bearer``
with a personal API key (``nx-...``, scope ``v1``) or a JWT access token. Every error is in
OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``. The run belongs to the
engine: a dropped stream or request stops nothing, and the reply is stored.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.db.models import Q
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.text import slugify
from django.views.decorators.csrf import csrf_exempt

from agents.models import Agent
from core.apikeys import is_api_key, user_from_api_key
from core.auth import AuthenticationFailed, User, bearer_token, user_from_access_token
from core.errors import NexusError, NotFound, ValidationFailed
from core.exceptions import retry_after_seconds
from realtime import protocol
from realtime.connections import StreamGuard
from realtime.dialects.openai_v1 import ChatStream, ResponsesStream, sse_data
from realtime.dialects.openai_v1_requests import chat_request_parse, responses_request_parse
from realtime.http_views import AsyncView, _json_body, _sse_response
from realtime.v1_runs import Started, run_gather, run_start, run_steps, stored_response

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


# --- errors and authentication --------------------------------------------------------------------


def openai_error(
    status: int, message: str, code: str, *, param: str | None = None, retry_after: float | None = None
) -> JsonResponse:
    error: dict[str, Any] = {
        "message": message,
        "type": ERROR_TYPES.get(status, "server_error"),
        "param": param,
        "code": code,
    }
    if retry_after is not None:
        error["retry_after"] = retry_after_seconds(retry_after)
    response = JsonResponse({"error": error}, status=status)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after_seconds(retry_after))
    elif status >= 409:
        # The official SDKs retry 409 and 5xx on their own; here a retry would start another run.
        response["x-should-retry"] = "false"
    return response


def _nexus_error(exc: NexusError) -> JsonResponse:
    param = None
    if isinstance(exc.details, dict) and exc.details:
        param = str(next(iter(exc.details)))
    return openai_error(exc.http_status, exc.message, exc.code, param=param, retry_after=exc.retry_after)


def _v1_user(header: str | None) -> User:
    """The caller of a ``/v1`` request: a personal API key with the ``v1`` scope, or a JWT."""
    token = bearer_token(header)
    if token is None:
        raise AuthenticationFailed("Send Authorization: Bearer <API key or access token>.")
    if is_api_key(token):
        return user_from_api_key(token, scope="v1")
    return user_from_access_token(token)


def v1_endpoint(method: str) -> Callable[[AsyncView], AsyncView]:
    """An async view of ``/v1`` answering ``method``: bearer authentication, errors in OpenAI's
    shape (405 for another method). ``view`` gets the caller as ``user=``. No cookie session:
    nothing here can be driven by another site's page."""

    def decorate(view: AsyncView) -> AsyncView:
        @functools.wraps(view)
        async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method != method:
                response = openai_error(405, f"Use {method} on {request.path}.", "method_not_allowed")
                response["Allow"] = method
                return response
            try:
                user = await sync_to_async(_v1_user)(request.headers.get("Authorization"))
            except AuthenticationFailed as exc:
                return openai_error(401, exc.message, "invalid_api_key")
            except NexusError as exc:
                return _nexus_error(exc)
            try:
                return await view(request, *args, user=user, **kwargs)
            except NexusError as exc:
                return _nexus_error(exc)

        return csrf_exempt(endpoint)

    return decorate


@csrf_exempt
async def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    return openai_error(404, f"Unknown endpoint: {request.method} {request.path}", "not_found")


# --- models ---------------------------------------------------------------------------------------


def _model_agents(user: User) -> list[Agent]:
    """The agents that are models for ``user``: their own and the shared ones (owner null). Not
    another user's, even for staff, who see every agent elsewhere."""
    return list(
        Agent.objects.filter(Q(owner=user) | Q(owner__isnull=True)).order_by("name", "created_at")[:1000]
    )


def model_slug(agent: Agent) -> str:
    return slugify(agent.name) or str(agent.pk)


def _agent_for_model(user: User, model: str) -> Agent:
    """The agent a ``model`` names: its id, or the slug of its name when one agent has it."""
    agents = _model_agents(user)
    try:
        wanted: uuid.UUID | None = uuid.UUID(model)
    except ValueError:
        wanted = None
    if wanted is not None:
        for agent in agents:
            if agent.pk == wanted:
                return agent
    else:
        matches = [a for a in agents if model_slug(a) == model.lower()]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValidationFailed(
                f"Several agents are named {model!r}: use the agent's id.", details={"model": ["Ambiguous."]}
            )
    raise NotFound(
        f"The model {model!r} does not exist or you do not have access to it.", details={"model": []}
    )


def _model_item(agent: Agent) -> dict[str, Any]:
    return {
        "id": str(agent.pk),
        "object": "model",
        "created": int(agent.created_at.timestamp()),
        "owned_by": agent.owner.get_username() if agent.owner is not None else "nexus",
        "name": agent.name,
        "slug": model_slug(agent),
        "provider": agent.provider,
        "provider_model": agent.model,
    }


@v1_endpoint("GET")
async def models(request: HttpRequest, *, user: User) -> JsonResponse:
    agents = await sync_to_async(_model_agents)(user)
    items = await sync_to_async(lambda: [_model_item(a) for a in agents])()
    return JsonResponse({"object": "list", "data": items})


@v1_endpoint("GET")
async def model_detail(request: HttpRequest, model: str, *, user: User) -> JsonResponse:
    agent = await sync_to_async(_agent_for_model)(user, model)
    return JsonResponse(await sync_to_async(_model_item)(agent))


def _headers(response: HttpResponseBase, started: Started) -> HttpResponseBase:
    response["X-Conversation-Id"] = started.conversation_id
    response["X-Run-Id"] = started.run_id
    return response


def _run_error(error: dict[str, Any]) -> JsonResponse:
    return openai_error(502, str(error.get("message")), str(error.get("code") or "run_failed"))


# --- chat completions -----------------------------------------------------------------------------


def _completion_id(started: Started) -> str:
    suffix = f"-{started.after}" if started.resumed else ""
    return f"chatcmpl-{uuid.UUID(started.run_id).hex}{suffix}"


async def _chat_events(started: Started, chat: ChatStream) -> AsyncIterator[bytes]:
    yield sse_data(chat.opening())
    async for step in run_steps(started):
        if step is None:
            yield protocol.sse_comment("keep-alive")
            continue
        for chunk in chat.chunks(step):
            yield sse_data(chunk)
        if chat.error is not None:
            error = {
                "message": chat.error["message"],
                "type": "server_error",
                "param": None,
                "code": chat.error["code"],
            }
            yield sse_data({"error": error})
            return
    yield b"data: [DONE]\n\n"


@v1_endpoint("POST")
async def chat_completions(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /v1/chat/completions``: one reply of the agent ``model``, streamed or whole."""
    plan = chat_request_parse(_json_body(request))
    agent = await sync_to_async(_agent_for_model)(user, plan.model)
    if plan.client_tools:
        plan.client_tools = await sync_to_async(_tools_validate)(plan.client_tools)
    guard = await StreamGuard.open(request, user) if plan.stream else None
    started = await run_start(user, plan, agent)
    chat = ChatStream(
        completion_id=_completion_id(started), model=plan.model, include_usage=plan.include_usage
    )
    if guard is not None:
        return _headers(_sse_response(guard.wrap(_chat_events(started, chat))), started)
    await run_gather(started, chat.chunks)
    if chat.error is not None:
        return _headers(_run_error(chat.error), started)
    return _headers(JsonResponse(chat.completion()), started)


def _tools_validate(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from agents.services import tool_specs_validate

    try:
        return tool_specs_validate(specs)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.message, details={"tools": [exc.message]}) from None


# --- responses ------------------------------------------------------------------------------------


def _response_id(started: Started) -> str:
    suffix = f"_{started.after}" if started.resumed else ""
    return f"resp_{uuid.UUID(started.run_id).hex}{suffix}"


async def _responses_events(started: Started, stream: ResponsesStream) -> AsyncIterator[bytes]:
    for event in stream.opening():
        yield sse_data(event, event=event["type"])
    async for step in run_steps(started):
        if step is None:
            yield protocol.sse_comment("keep-alive")
            continue
        for event in stream.events(step):
            yield sse_data(event, event=event["type"])


@v1_endpoint("POST")
async def responses(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /v1/responses``: one response (Open Responses), streamed as SSE events or whole."""
    plan = responses_request_parse(_json_body(request))
    agent = await sync_to_async(_agent_for_model)(user, plan.model)
    if plan.client_tools:
        plan.client_tools = await sync_to_async(_tools_validate)(plan.client_tools)
    guard = await StreamGuard.open(request, user) if plan.stream else None
    started = await run_start(user, plan, agent)
    stream = ResponsesStream(
        response_id=_response_id(started),
        model=plan.model,
        echo=plan.echo,
        message_id=uuid.UUID(started.run_id).hex,
    )
    if guard is not None:
        return _headers(_sse_response(guard.wrap(_responses_events(started, stream))), started)
    stream.opening()
    await run_gather(started, stream.events)
    return _headers(JsonResponse(stream.response()), started)


@v1_endpoint("GET")
async def response_detail(request: HttpRequest, response_id: str, *, user: User) -> JsonResponse:
    """``GET /v1/responses/{id}``: the stored response (also after its stream was dropped)."""
    return JsonResponse(await sync_to_async(stored_response)(user, response_id))
