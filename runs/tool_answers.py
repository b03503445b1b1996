"""A client's answer to a client tool call: stored once, then the paused run that waits for it is woken."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import transaction
from django.utils import timezone

from conversations.models import Message, MessageType
from conversations.selectors import (
    conversation_get_for_user,
)
from core.auth import User
from core.errors import Conflict, NotFound, ValidationFailed
from runs.approvals import wake
from runs.models import PendingStatus, PendingToolCall, Run
from runs.store import db
from runs.tools import store_tool_result, tool_result_key

# --- client tools ----------------------------------------------------------------------------------


def _prepare_tool_result(
    *, user: User, conversation_id: uuid.UUID | str, tool_call_id: str, result: Any, is_error: bool
) -> str:
    """Store a client's answer to a client tool call of a run of this conversation, which ``user``
    may access; the run's id. The call is found in this
    conversation only: a call id is the provider's and may repeat in other conversations and runs,
    so it is never looked up on its own. Of several calls with this id here, the newest unanswered
    one gets the answer."""
    conversation = conversation_get_for_user(user=user, conversation_id=conversation_id)
    calls = list(
        Message.objects.filter(
            conversation=conversation, type=MessageType.TOOL_CALL, metadata__toolCallId=tool_call_id
        ).order_by("-created_at", "-pk")[:20]
    )
    if not calls:
        raise NotFound("No tool call with that id in this conversation.")
    answered = set(
        Message.objects.filter(
            conversation=conversation,
            type=MessageType.TOOL_RESULT,
            client_message_id__in=[
                tool_result_key(c.metadata.get("run_id", ""), tool_call_id) for c in calls
            ],
        ).values_list("client_message_id", flat=True)
    )
    call = next(
        (c for c in calls if tool_result_key(c.metadata.get("run_id", ""), tool_call_id) not in answered),
        calls[0],
    )
    if call.metadata.get("execution") != "client":
        raise ValidationFailed(
            "That tool runs on the server.", details={"toolCallId": ["Not a client tool."]}
        )
    run_id = str(call.metadata.get("run_id") or "")
    if not run_id or not Run.objects.filter(pk=run_id, conversation=conversation).exists():
        # a call stored by no run of this conversation: nothing waits for it
        raise NotFound("No tool call with that id in this conversation.")
    with transaction.atomic():
        # The pending row decides (the first answer, or the sweeper's timeout, wins); the result
        # is stored in the same transaction, so the run that resumes finds it.
        pending = PendingToolCall.objects.filter(run_id=run_id, tool_call_id=tool_call_id).first()
        if pending is not None and not PendingToolCall.objects.filter(
            pk=pending.pk, status=PendingStatus.PENDING
        ).update(status=PendingStatus.ANSWERED, decided_by=user, decided_at=timezone.now()):
            raise Conflict("This tool call already has a result.")
        stored = store_tool_result(
            conversation_id=conversation.pk,
            run_id=run_id,
            tool_call_id=tool_call_id,
            tool=call.metadata.get("tool", ""),
            agent_id=call.metadata.get("agent_id", ""),
            result=result,
            is_error=is_error,
        )
        if stored is None:
            raise Conflict("This tool call already has a result.")
    return run_id


async def tool_result_submit(
    *, user: User, conversation_id: uuid.UUID | str, tool_call_id: str, result: Any, is_error: bool
) -> None:
    """A client's answer to a client tool call. The first valid answer wins; later ones get Conflict.

    Only a user who may access the conversation answers, and only a call of a run of that
    conversation. The run waits paused (runs.approvals): the answer wakes it, and whichever
    executor claims it resumes it with this result."""
    run_id = await db(_prepare_tool_result)(
        user=user,
        conversation_id=conversation_id,
        tool_call_id=tool_call_id,
        result=result,
        is_error=is_error,
    )
    await wake(run_id)
