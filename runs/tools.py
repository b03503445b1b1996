"""Tool calls inside a run: server tools run here, client tools go to the conversation's sockets.

The tool_call and tool_result of every call are stored as messages and emitted as events. A
client tool's first valid result wins (a unique key on the stored result); no answer within the
timeout gives the model an error result.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction

from conversations.models import Message, MessageRole, MessageStatus, MessageType
from providers.base import ToolCall

if TYPE_CHECKING:
    from runs.engine import _Execution

TOOL_RESULT_KEY = "tool:{}"
MAX_RESULT_CHARS = 200_000


def _store_call(ex: _Execution, call: ToolCall, execution: str, seq: int) -> None:
    Message.objects.create(
        conversation_id=ex.conversation.pk,
        agent=ex.agent,
        role=MessageRole.AGENT,
        type=MessageType.TOOL_CALL,
        status=MessageStatus.COMPLETE,
        content=json.dumps(call.arguments, ensure_ascii=False),
        seq=seq,
        metadata={
            "toolCallId": call.id,
            "tool": call.name,
            "parameters": call.arguments,
            "execution": execution,
            "run_id": ex.run_id,
            "agent_id": str(ex.agent.pk),
        },
    )


def store_tool_result(
    *, conversation_id: Any, tool_call_id: str, tool: str, agent_id: str, result: Any, is_error: bool
) -> Message | None:
    """Store a tool's result once; None if this call already has one (first result wins)."""
    content = json.dumps(result, ensure_ascii=False, default=str)[:MAX_RESULT_CHARS]
    try:
        with transaction.atomic():
            return Message.objects.create(
                conversation_id=conversation_id,
                role=MessageRole.TOOL,
                type=MessageType.TOOL_RESULT,
                status=MessageStatus.ERROR if is_error else MessageStatus.COMPLETE,
                content=content,
                client_message_id=TOOL_RESULT_KEY.format(tool_call_id),
                metadata={
                    "toolCallId": tool_call_id,
                    "tool": tool,
                    "agent_id": agent_id,
                    "is_error": is_error,
                },
            )
    except IntegrityError:
        return None


def _stored_result(conversation_id: Any, tool_call_id: str) -> dict[str, Any] | None:
    row = Message.objects.filter(
        conversation_id=conversation_id, client_message_id=TOOL_RESULT_KEY.format(tool_call_id)
    ).first()
    if row is None:
        return None
    try:
        result = json.loads(row.content)
    except ValueError:
        result = row.content
    return {"result": result, "is_error": bool(row.metadata.get("is_error"))}


def _set_result_seq(conversation_id: Any, tool_call_id: str, seq: int) -> None:
    Message.objects.filter(
        conversation_id=conversation_id, client_message_id=TOOL_RESULT_KEY.format(tool_call_id)
    ).update(seq=seq)


async def run_tool_call(ex: _Execution, call: ToolCall, execution: str) -> dict[str, Any]:
    """Execute one tool call of a run; returns {"result", "is_error"} to feed back to the model."""
    agent_id = str(ex.agent.pk)
    conversation_id = ex.conversation.pk
    waiter: asyncio.Future[dict[str, Any]] | None = None
    if execution == "client":
        # Registered before the call is announced, so an instant answer cannot be missed.
        waiter = asyncio.get_running_loop().create_future()
        ex.manager.tool_waiters[call.id] = waiter
    try:
        seq = await ex.writer.emit_now(
            "tool_call",
            {
                "toolCallId": call.id,
                "tool": call.name,
                "parameters": call.arguments,
                "messageId": ex.message_id,
                "execution": execution,
                "agent_id": agent_id,
                "run_id": ex.run_id,
            },
        )
        await sync_to_async(_store_call)(ex, call, execution, seq)
        if waiter is None:
            outcome = await _server_tool(ex, call)
            await sync_to_async(store_tool_result)(
                conversation_id=conversation_id,
                tool_call_id=call.id,
                tool=call.name,
                agent_id=agent_id,
                result=outcome["result"],
                is_error=outcome["is_error"],
            )
        else:
            outcome = await _client_tool(ex, call, waiter)
    finally:
        if waiter is not None:
            ex.manager.tool_waiters.pop(call.id, None)
    seq = await ex.writer.emit_now(
        "tool_result",
        {
            "toolCallId": call.id,
            "tool": call.name,
            "result": outcome["result"],
            "is_error": outcome["is_error"],
            "agent_id": agent_id,
        },
    )
    await sync_to_async(_set_result_seq)(conversation_id, call.id, seq)
    return outcome


async def _server_tool(ex: _Execution, call: ToolCall) -> dict[str, Any]:
    from agents.tools import ToolContext, execute_server_tool

    context = ToolContext(
        user_id=ex.conversation.owner_id, conversation_id=str(ex.conversation.pk), agent_id=str(ex.agent.pk)
    )
    outcome = await execute_server_tool(call.name, call.arguments, context=context)
    return {"result": outcome.result, "is_error": outcome.is_error}


async def _client_tool(
    ex: _Execution, call: ToolCall, waiter: asyncio.Future[dict[str, Any]]
) -> dict[str, Any]:
    """Wait for the first client answer: pushed over the control channel, or found in the database
    (the push is at-most-once, so the stored result is checked every second as well)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.NEXUS_CLIENT_TOOL_TIMEOUT
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        try:
            return await asyncio.wait_for(asyncio.shield(waiter), min(1.0, remaining))
        except TimeoutError:
            stored = await sync_to_async(_stored_result)(ex.conversation.pk, call.id)
            if stored is not None:
                return stored
    timeout_result = {
        "error": f"The client did not answer {call.name} within {settings.NEXUS_CLIENT_TOOL_TIMEOUT:g} s."
    }
    stored = await sync_to_async(store_tool_result)(
        conversation_id=ex.conversation.pk,
        tool_call_id=call.id,
        tool=call.name,
        agent_id=str(ex.agent.pk),
        result=timeout_result,
        is_error=True,
    )
    if stored is None:  # an answer landed at the last moment: it wins
        return await sync_to_async(_stored_result)(ex.conversation.pk, call.id) or {
            "result": timeout_result,
            "is_error": True,
        }
    return {"result": timeout_result, "is_error": True}
