"""AG-UI 1.0 over HTTP: ``POST /api/agui/{agent_id}`` (seed 003; docs/dialects.md, "AG-UI").

The body is a ``RunAgentInput``; the answer is one AG-UI run as Server-Sent Events. The request is
read into Nexus's own services (``realtime.dialects.agui.run_input_parse``): the thread is a
conversation of the caller's, a new user message is ``message_send``, a ``tool`` message answers a
waiting client tool call (``tool_result_submit``). The stream follows the conversation's log as
the other SSE streams do (``http_views._Follower``) and renders the Nexus run's events as AG-UI
events. The run belongs to the engine: a dropped stream stops nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponseBase
from django.views.decorators.http import require_http_methods

from agents.selectors import agent_get_for_user
from agents.services import tool_specs_validate
from conversations.models import Participant
from conversations.selectors import conversation_queryset_for_user
from conversations.services import conversation_create, conversation_history_seed
from core.auth import User
from core.errors import NexusError, NotFound, TooLarge, ValidationFailed
from realtime import protocol
from realtime.connections import StreamGuard
from realtime.dialects.agui import (
    AguiRunStream,
    RunPlan,
    client_message_key,
    encode,
    run_input_parse,
    thread_conversation_id,
)
from realtime.http_views import (
    KEEPALIVE_SECONDS,
    _Follower,
    _last_seq,
    _send,
    _seq_before,
    _sse_response,
    authenticated_endpoint,
)
from realtime.tool_replies import tool_answers_give
from runs.quotas import content_admit


def _bound(user: User, agent: Any, candidates: list[uuid.UUID]) -> tuple[str, int, bool] | None:
    """The first of ``candidates`` that is a conversation of the caller's own (a thread is never
    bound to a conversation someone else owns, even one the caller may see)."""
    for candidate in candidates:
        conversation = conversation_queryset_for_user(user).filter(pk=candidate, owner=user).first()
        if conversation is None:
            continue
        if not Participant.objects.filter(conversation=conversation, agent=agent).exists():
            raise ValidationFailed(
                "That agent is not in this thread's conversation.",
                details={"agent_id": ["Not a participant."]},
            )
        return str(conversation.pk), conversation.last_seq, False
    return None


def _thread_conversation(user: User, agent_id: str, plan: RunPlan) -> tuple[str, int, bool]:
    """(conversation id, its stored last seq, whether this request created it) for the thread.

    A thread id that is the id of a conversation the caller owns binds to it; any other thread
    id names the caller's conversation ``thread_conversation_id(user, thread)``, created on the
    first run with the earlier turns of ``messages`` as its history."""
    agent = agent_get_for_user(user=user, agent_id=agent_id)
    thread = plan.agui.thread_id
    candidates: list[uuid.UUID] = []
    try:
        candidates.append(uuid.UUID(thread))
    except ValueError:
        pass
    derived = thread_conversation_id(user.pk, thread)
    candidates.append(derived)
    found = _bound(user, agent, candidates)
    if found is not None:
        return found
    if plan.send is None:
        raise NotFound("No conversation for this thread: its tool calls are unknown here.")
    for item in plan.history:
        content_admit(item["content"], field="messages")
    try:
        with transaction.atomic():
            conversation = conversation_create(
                owner=user, participants=[(agent, "primary")], conversation_id=derived
            )
            conversation_history_seed(conversation=conversation, agent=agent, history=plan.history)
    except IntegrityError:  # the thread's first two runs at once: the other one made it
        found = _bound(user, agent, [derived])
        if found is None:
            raise
        return found
    return str(conversation.pk), 0, True


async def _events(conversation_id: str, after: int, stream: AguiRunStream) -> AsyncIterator[bytes]:
    yield encode(stream.started())
    if not stream.nexus_run_id:
        yield encode(stream.fail("No run was started for this message.", "no_run"))
        return
    try:
        async with _Follower(conversation_id, after) as follower:
            async for evt in follower.events(keepalive=KEEPALIVE_SECONDS):
                if evt is None:
                    yield protocol.sse_comment("keep-alive")
                    continue
                for event in stream.events(evt):
                    yield encode(event)
                if stream.done:
                    return
    except NexusError as exc:
        yield encode(stream.fail(exc.message, exc.code))


def _body(request: HttpRequest) -> bytes:
    try:
        return request.body
    except RequestDataTooBig:
        raise TooLarge("The request body is too large.") from None


@require_http_methods(["POST"])
@authenticated_endpoint
async def agui_run(request: HttpRequest, agent_id: str, *, user: User) -> HttpResponseBase:
    """``POST /api/agui/{agent_id}``: one AG-UI run (``RunAgentInput`` in, AG-UI events out)."""
    plan = run_input_parse(_body(request))
    if plan.client_tools:
        plan.client_tools = tool_specs_validate(plan.client_tools)
    if plan.send is not None:
        content_admit(plan.send, field="messages")
    guard = await StreamGuard.open(request, user)
    conversation_id, stored_seq, created = await sync_to_async(_thread_conversation)(user, agent_id, plan)
    after = await _last_seq(conversation_id, stored_seq)
    nexus_run_id: str | None = None
    reply_id: str | None = None
    if plan.tool_answers:
        nexus_run_id, reply_id, replay_from = await tool_answers_give(
            user,
            conversation_id,
            plan.tool_answers,
            unknown=lambda call_id: NotFound(f"No tool call {call_id!r} in this thread."),
        )
        if replay_from is not None:
            after = replay_from
    if plan.send is not None:
        assert plan.send_id is not None  # set with send
        send: dict[str, Any] = {"client_tools": plan.client_tools or None, "context": plan.context or None}
        result = await _send(
            user,
            conversation_id,
            created,
            content=plan.send,
            client_message_id=client_message_key(plan.send_id),
            agent_id=str(agent_id),
            **send,
        )
        nexus_run_id, reply_id = result.run_id, None
        if created or (result.duplicate and result.run_id):
            # The same AG-UI message again (a retried request): its run streams again. A new
            # conversation with a stored past: its log begins past a gap, at this message.
            after = await sync_to_async(_seq_before)(result.message_id, after)
    stream = AguiRunStream(
        thread_id=plan.agui.thread_id,
        run_id=plan.agui.run_id,
        nexus_run_id=nexus_run_id or "",
        reply_id=reply_id,
    )
    response = _sse_response(guard.wrap(_events(conversation_id, after, stream)))
    response["X-Conversation-Id"] = conversation_id
    if nexus_run_id:
        response["X-Run-Id"] = nexus_run_id
    return response
