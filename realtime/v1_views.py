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

import asyncio
import functools
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.text import slugify
from django.views.decorators.csrf import csrf_exempt

from agents.models import Agent
from conversations.models import Message, MessageType, Participant
from conversations.services import conversation_create, conversation_history_seed
from core.apikeys import is_api_key, user_from_api_key
from core.auth import AuthenticationFailed, User, bearer_token, user_from_access_token
from core.errors import Conflict, NexusError, NotFound, ValidationFailed
from core.exceptions import retry_after_seconds
from realtime import protocol
from realtime.agui_views import _call_run
from realtime.connections import StreamGuard
from realtime.dialects.openai_v1 import (
    ChatStream,
    ResponsesStream,
    RunSteps,
    Step,
    V1Plan,
    chat_request_parse,
    responses_request_parse,
    sse_data,
)
from realtime.http_views import (
    INVOKE_TIMEOUT,
    KEEPALIVE_SECONDS,
    AsyncView,
    _Follower,
    _json_body,
    _last_seq,
    _send,
    _seq_before,
    _sse_response,
)
from runs.models import Run, RunStatus
from runs.quotas import content_admit
from runs.tool_answers import tool_result_submit

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
_RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{32})(?:_(\d+))?$")


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
    from django.db.models import Q

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


# --- conversations --------------------------------------------------------------------------------


def _fresh_conversation(user: User, agent: Agent, history: list[dict[str, str]]) -> tuple[str, int, bool]:
    """A new conversation of the caller's with the agent, its past seeded from the request."""
    for item in history:
        content_admit(item["content"], field="messages")
    with transaction.atomic():
        conversation = conversation_create(owner=user, participants=[(agent, "primary")], title="")
        conversation_history_seed(conversation=conversation, agent=agent, history=history)
    return str(conversation.pk), 0, True


def _check_participant(conversation_id: Any, agent: Agent) -> None:
    if not Participant.objects.filter(conversation_id=conversation_id, agent=agent).exists():
        raise ValidationFailed(
            "That model is not the agent of this conversation.", details={"model": ["Not a participant."]}
        )


def _conversation_of_call(user: User, agent: Agent, call_id: str) -> tuple[str, int, bool]:
    """The caller's conversation whose run made the tool call ``call_id`` (the newest)."""
    call = (
        Message.objects.filter(
            conversation__owner=user, type=MessageType.TOOL_CALL, metadata__toolCallId=call_id
        )
        .select_related("conversation")
        .order_by("-created_at", "-pk")
        .first()
    )
    if call is None:
        raise NotFound(f"No tool call {call_id!r} of yours is waiting.", details={"messages": []})
    _check_participant(call.conversation_id, agent)
    return str(call.conversation_id), call.conversation.last_seq, False


def response_run_id(response_id: str) -> tuple[str, int | None]:
    match = _RESPONSE_ID.match(response_id or "")
    if match is None:
        raise NotFound(f"No response {response_id!r}.", details={"previous_response_id": []})
    suffix = match.group(2)
    return str(uuid.UUID(match.group(1))), int(suffix) if suffix is not None else None


def _run_of_response(user: User, response_id: str) -> Run:
    run_id, _ = response_run_id(response_id)
    run = (
        Run.objects.select_related("reply_message", "agent")
        .filter(pk=run_id, conversation__owner=user)
        .first()
    )
    if run is None:
        raise NotFound(f"No response {response_id!r}.", details={"previous_response_id": []})
    return run


def _conversation_of_response(user: User, agent: Agent, response_id: str) -> tuple[str, int, bool]:
    run = _run_of_response(user, response_id)
    _check_participant(run.conversation_id, agent)
    return str(run.conversation_id), run.conversation.last_seq, False


# --- the run --------------------------------------------------------------------------------------


class _Started:
    """The run a request follows: its conversation, the seq to follow from, the run and reply."""

    def __init__(
        self, conversation_id: str, after: int, run_id: str, reply_id: str | None, resumed: bool
    ) -> None:
        self.conversation_id = conversation_id
        self.after = after
        self.run_id = run_id
        self.reply_id = reply_id
        self.resumed = resumed  # the request answered tool calls of a run that goes on


async def _answer_tools(
    user: User, conversation_id: str, plan: V1Plan
) -> tuple[str | None, str | None, int | None]:
    """Hand each tool answer to the call it answers; (run id, reply id, a seq to replay from when
    every answer had been given already: a retried request)."""
    run_id = reply_id = None
    replay_from: int | None = None
    fresh = False
    for call_id, result, is_error in plan.tool_answers:
        run_id, reply_id, _ = await sync_to_async(_call_run)(conversation_id, call_id)
        if run_id is None:
            raise NotFound(f"No tool call {call_id!r} in this conversation.", details={"messages": []})
        try:
            await tool_result_submit(
                user=user,
                conversation_id=conversation_id,
                tool_call_id=call_id,
                result=result,
                is_error=is_error,
            )
            fresh = True
        except Conflict:
            seq = (await sync_to_async(_call_run)(conversation_id, call_id))[2]
            if seq is not None:
                replay_from = seq - 1 if replay_from is None else min(replay_from, seq - 1)
    return run_id, reply_id, None if fresh else replay_from


async def _start(user: User, plan: V1Plan, agent: Agent) -> _Started:
    """Start (or continue) the run the request asks for, through the runs doors."""
    if plan.send is not None:
        content_admit(plan.send, field="messages")
    if plan.previous is not None:
        conversation_id, stored_seq, created = await sync_to_async(_conversation_of_response)(
            user, agent, plan.previous
        )
    elif plan.tool_answers:
        conversation_id, stored_seq, created = await sync_to_async(_conversation_of_call)(
            user, agent, plan.tool_answers[0][0]
        )
    else:
        conversation_id, stored_seq, created = await sync_to_async(_fresh_conversation)(
            user, agent, plan.history
        )
    after = await _last_seq(conversation_id, stored_seq)
    run_id: str | None = None
    reply_id: str | None = None
    resumed = False
    if plan.tool_answers:
        run_id, reply_id, replay_from = await _answer_tools(user, conversation_id, plan)
        resumed = True
        if replay_from is not None:
            after = replay_from
    if plan.send is not None:
        result = await _send(
            user,
            conversation_id,
            created,
            content=plan.send,
            agent_id=str(agent.pk),
            client_tools=plan.client_tools or None,
            context={"instructions": plan.instructions} if plan.instructions else None,
        )
        if result.run_id is None:
            raise Conflict("No run was started for this message.")
        run_id, reply_id, resumed = result.run_id, None, False
        if created:
            after = await sync_to_async(_seq_before)(result.message_id, after)
    assert run_id is not None
    return _Started(conversation_id, after, run_id, reply_id, resumed)


async def _steps(started: _Started) -> AsyncIterator[Step | None]:
    """The run's steps, from the log (None: a keep-alive), up to its end."""
    reader = RunSteps(started.run_id, started.reply_id)
    try:
        async with _Follower(started.conversation_id, started.after) as follower:
            async for evt in follower.events(keepalive=KEEPALIVE_SECONDS):
                if evt is None:
                    yield None
                    continue
                for step in reader.steps(evt):
                    yield step
                if reader.done:
                    return
    except NexusError as exc:
        yield reader.fail(exc.message, exc.code)


async def _gather(started: _Started, render: Any) -> None:
    """Follow the run to its end for a non-streamed answer; ``render(step)`` takes each step."""
    try:
        async with asyncio.timeout(INVOKE_TIMEOUT):
            async for step in _steps(started):
                if step is not None:
                    render(step)
    except TimeoutError:
        raise _Timeout() from None


class _Timeout(NexusError):
    code = "timeout"
    http_status = 504

    def __init__(self) -> None:
        super().__init__("The reply took too long; it goes on and is stored (GET /v1/responses/{id}).")


def _headers(response: HttpResponseBase, started: _Started) -> HttpResponseBase:
    response["X-Conversation-Id"] = started.conversation_id
    response["X-Run-Id"] = started.run_id
    return response


def _run_error(error: dict[str, Any]) -> JsonResponse:
    return openai_error(502, str(error.get("message")), str(error.get("code") or "run_failed"))


# --- chat completions -----------------------------------------------------------------------------


def _completion_id(started: _Started) -> str:
    suffix = f"-{started.after}" if started.resumed else ""
    return f"chatcmpl-{uuid.UUID(started.run_id).hex}{suffix}"


async def _chat_events(started: _Started, chat: ChatStream) -> AsyncIterator[bytes]:
    yield sse_data(chat.opening())
    async for step in _steps(started):
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
    started = await _start(user, plan, agent)
    chat = ChatStream(
        completion_id=_completion_id(started), model=plan.model, include_usage=plan.include_usage
    )
    if guard is not None:
        return _headers(_sse_response(guard.wrap(_chat_events(started, chat))), started)
    await _gather(started, chat.chunks)
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


def _response_id(started: _Started) -> str:
    suffix = f"_{started.after}" if started.resumed else ""
    return f"resp_{uuid.UUID(started.run_id).hex}{suffix}"


async def _responses_events(started: _Started, stream: ResponsesStream) -> AsyncIterator[bytes]:
    for event in stream.opening():
        yield sse_data(event, event=event["type"])
    async for step in _steps(started):
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
    started = await _start(user, plan, agent)
    stream = ResponsesStream(
        response_id=_response_id(started),
        model=plan.model,
        echo=plan.echo,
        message_id=uuid.UUID(started.run_id).hex,
    )
    if guard is not None:
        return _headers(_sse_response(guard.wrap(_responses_events(started, stream))), started)
    stream.opening()
    await _gather(started, stream.events)
    return _headers(JsonResponse(stream.response()), started)


_STORED_STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.RUNNING: "in_progress",
    RunStatus.COMPLETED: "completed",
    RunStatus.STOPPED: "incomplete",
    RunStatus.INCOMPLETE: "incomplete",
    RunStatus.FAILED: "failed",
}


def _stored_response(user: User, response_id: str) -> dict[str, Any]:
    """A response read back from what is stored: the run's reply as it is now (the whole reply
    of the run, whichever request of it ``response_id`` names)."""
    run = _run_of_response(user, response_id)
    reply = run.reply_message
    hex_id = uuid.UUID(str(run.pk)).hex
    output: list[dict[str, Any]] = []
    if reply is not None and reply.content:
        output.append(
            {
                "type": "message",
                "id": f"msg_{hex_id}_0",
                "status": "completed" if run.status == RunStatus.COMPLETED else "incomplete",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply.content, "annotations": []}],
            }
        )
    usage = run.usage or {}
    prompt, completion = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    status = _STORED_STATUS.get(RunStatus(run.status), "failed")
    error = run.error or None
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(run.created_at.timestamp()),
        "status": status,
        "model": str(run.agent_id),
        "output": output,
        "usage": {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        },
        "error": {"code": str(error.get("code") or "failed"), "message": str(error.get("message") or "")}
        if status == "failed" and isinstance(error, dict)
        else None,
        "incomplete_details": {"reason": "stopped"} if run.status == RunStatus.STOPPED else None,
        "conversation_id": str(run.conversation_id),
        "parallel_tool_calls": False,
        "tools": [],
        "tool_choice": "auto",
        "text": {"format": {"type": "text"}},
        "metadata": {},
    }


@v1_endpoint("GET")
async def response_detail(request: HttpRequest, response_id: str, *, user: User) -> JsonResponse:
    """``GET /v1/responses/{id}``: the stored response (also after its stream was dropped)."""
    return JsonResponse(await sync_to_async(_stored_response)(user, response_id))
