"""The runs of ``/v1`` (docs/v1.md): which conversation a request continues or starts, the run it
starts or answers through the runs doors (``message_send``, ``tool_result_submit``), its steps
read from the conversation's event log (``http_views._Follower``, the codec ``RunSteps``), and a
response read back from what is stored. The views are ``realtime/v1_views.py``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.db import transaction

from agents.models import Agent
from conversations.models import Message, MessageType, Participant
from conversations.services import conversation_create, conversation_history_seed
from core.auth import User
from core.errors import Conflict, NexusError, NotFound, ValidationFailed
from realtime.dialects.openai_v1 import RunSteps, Step
from realtime.dialects.openai_v1_requests import V1Plan
from realtime.http_views import INVOKE_TIMEOUT, KEEPALIVE_SECONDS, _Follower, _last_seq, _send, _seq_before
from realtime.tool_replies import tool_answers_give
from runs.models import Run, RunStatus
from runs.quotas import content_admit

_RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{32})(?:_(\d+))?$")

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


class Started:
    """The run a request follows: its conversation, the seq to follow from, the run and reply."""

    def __init__(
        self, conversation_id: str, after: int, run_id: str, reply_id: str | None, resumed: bool
    ) -> None:
        self.conversation_id = conversation_id
        self.after = after
        self.run_id = run_id
        self.reply_id = reply_id
        self.resumed = resumed  # the request answered tool calls of a run that goes on


async def run_start(user: User, plan: V1Plan, agent: Agent) -> Started:
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
        run_id, reply_id, replay_from = await tool_answers_give(
            user,
            conversation_id,
            plan.tool_answers,
            unknown=lambda call_id: NotFound(
                f"No tool call {call_id!r} in this conversation.", details={"messages": []}
            ),
        )
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
    return Started(conversation_id, after, run_id, reply_id, resumed)


async def run_steps(started: Started) -> AsyncIterator[Step | None]:
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


async def run_gather(started: Started, render: Callable[[Step], Any]) -> None:
    """Follow the run to its end for a non-streamed answer; ``render(step)`` takes each step."""
    try:
        async with asyncio.timeout(INVOKE_TIMEOUT):
            async for step in run_steps(started):
                if step is not None:
                    render(step)
    except TimeoutError:
        raise RunTimeout() from None


class RunTimeout(NexusError):
    code = "timeout"
    http_status = 504

    def __init__(self) -> None:
        super().__init__("The reply took too long; it goes on and is stored (GET /v1/responses/{id}).")


_STORED_STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.RUNNING: "in_progress",
    RunStatus.COMPLETED: "completed",
    RunStatus.STOPPED: "incomplete",
    RunStatus.INCOMPLETE: "incomplete",
    RunStatus.FAILED: "failed",
}


def stored_response(user: User, response_id: str) -> dict[str, Any]:
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
