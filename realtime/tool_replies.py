"""Tool answers carried in a request's message list (AG-UI's ``tool`` messages, ``/v1``'s ``tool``
messages and ``function_call_output`` items): each handed to the waiting call it answers, once.

A client that retries a request sends the same answers again: the second time they are refused as
given already (``Conflict``), and the caller replays the run's events from the first answer's
result instead of starting anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from channels.db import database_sync_to_async as sync_to_async

from conversations.models import Message
from core.auth import User
from core.errors import Conflict, NexusError
from runs.models import Run
from runs.tool_answers import tool_result_submit
from runs.tools import tool_result_key


def call_run(conversation_id: str, tool_call_id: str) -> tuple[str | None, str | None, int | None]:
    """(run id, reply id, seq of its stored result) of the newest call with this id here."""
    call = (
        Message.objects.filter(
            conversation_id=conversation_id, type="tool_call", metadata__toolCallId=tool_call_id
        )
        .order_by("-created_at", "-pk")
        .first()
    )
    if call is None:
        return None, None, None
    run_id = call.metadata.get("run_id")
    reply = Run.objects.filter(pk=run_id).values_list("reply_message_id", flat=True).first()
    result_seq = (
        Message.objects.filter(
            conversation_id=conversation_id, client_message_id=tool_result_key(run_id or "", tool_call_id)
        )
        .values_list("seq", flat=True)
        .first()
    )
    return run_id, str(reply) if reply else None, result_seq


async def tool_answers_give(
    user: User,
    conversation_id: str,
    answers: Iterable[tuple[str, Any, bool]],
    *,
    unknown: Callable[[str], NexusError],
) -> tuple[str | None, str | None, int | None]:
    """Hand each (call id, result, is_error) to the call it answers: (run id, reply id, a seq to
    replay from when every answer had been given already). A call id this conversation never
    asked raises ``unknown(call_id)``."""
    run_id = reply_id = None
    replay_from: int | None = None
    fresh = False
    for call_id, result, is_error in answers:
        run_id, reply_id, _ = await sync_to_async(call_run)(conversation_id, call_id)
        if run_id is None:
            raise unknown(call_id)
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
            seq = (await sync_to_async(call_run)(conversation_id, call_id))[2]
            if seq is not None:
                replay_from = seq - 1 if replay_from is None else min(replay_from, seq - 1)
    return run_id, reply_id, None if fresh else replay_from
