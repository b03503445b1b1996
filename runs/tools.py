"""Tool calls inside a run: server tools run here, client tools go to the conversation's sockets.

The tool_call and tool_result of every call are stored as messages and emitted as events. A call
that waits (a client tool, or a server tool that needs approval) is stored with its pending row and
the run pauses after it (``runs.approvals``); once decided, the run resumes and ``resume_call``
gives it its outcome. A client tool's first valid result wins (a unique key on the stored result,
and the pending row's conditional update); no answer within the timeout gives the model an error
result.

Policy (SPEC section 12): a run executes only the tools its agent lists. A call to any other name
is refused: the model gets an error result it can recover from, watchers see the call and its
error result, the log gets a warning, and nothing runs. Calls past the per-round cap are refused
without being stored (``over_cap_outcome``).

A call is known by its run and the provider's call id together (``tool_result_key``): providers
and OpenAI-compatible servers make up their ids, and two runs may well both say ``call_1``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.db import IntegrityError, transaction

from agents.tools import ToolContext, execute_server_tool
from agents.tools.mcp import McpBinding, execute_mcp_tool
from conversations.models import Message, MessageRole, MessageStatus, MessageType
from providers.base import ToolCall
from runs.approvals import Policy, denied_outcome, pending_create, pending_of
from runs.domain_events import ApprovalRequired, ToolCallRequested, ToolResultGiven
from runs.models import PendingKind, PendingStatus

if TYPE_CHECKING:
    from runs.execution import Execution

logger = logging.getLogger(__name__)

MAX_RESULT_CHARS = 200_000
# Message.client_message_id holds at most 128 characters; a longer key is hashed.
_MAX_KEY_CHARS = 128
_LOGGABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def tool_result_key(run_id: uuid.UUID | str, tool_call_id: str) -> str:
    """The unique key (``Message.client_message_id``) of the result of one call of one run."""
    key = f"tool:{run_id}:{tool_call_id}"
    if len(key) <= _MAX_KEY_CHARS:
        return key
    return f"tool:{run_id}:#{hashlib.sha256(tool_call_id.encode()).hexdigest()}"


def loggable_tool_name(name: str) -> str:
    """A model's tool name as it may go into a log line: an identifier, or a placeholder."""
    return name if _LOGGABLE_NAME.fullmatch(name) else "<not an identifier>"


def refused_outcome(name: str) -> dict[str, Any]:
    """The result the model gets for a tool its agent does not list."""
    shown = name if len(name) <= 64 else name[:64] + "…"
    return {
        "result": {"error": f"The tool {shown!r} is not available to this agent; use only the tools listed."},
        "is_error": True,
    }


def over_cap_outcome(cap: int) -> dict[str, Any]:
    """The result the model gets for a call past the per-round cap (it is neither run nor stored)."""
    return {
        "result": {"error": f"Too many tool calls at once: at most {cap} per round run; this one did not."},
        "is_error": True,
    }


def offered_tools(
    agent_tools: list[dict[str, Any]] | None,
    mcp_bindings: dict[str, McpBinding],
    client_tools: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The tools a run offers the model: the agent's own, its MCP entries as their servers
    describe them now (those ``mcp_bindings`` left out are not offered), then the client tools
    offered with the message."""
    # an MCP entry's approval policy (runs.approvals) travels with the tool it offers
    policies = {
        t.get("name"): {k: t[k] for k in ("approval", "allow", "deny") if k in t}
        for t in (agent_tools or [])
        if t.get("execution") == "mcp"
    }
    return [
        *(t for t in (agent_tools or []) if t.get("execution") != "mcp"),
        *(
            {
                "name": b.name,
                "description": b.description,
                "parameters": b.parameters,
                "execution": "mcp",
                **policies.get(b.name, {}),
            }
            for b in mcp_bindings.values()
        ),
        *client_tools,
    ]


def _store_call(
    ex: Execution, call: ToolCall, execution: str | None, pending: str | None
) -> tuple[uuid.UUID, datetime | None]:
    """The call's message, and its pending row when it waits (both or neither)."""
    if pending is None:
        return _call_message(ex, call, execution), None
    with transaction.atomic():
        row = _call_message(ex, call, execution)
        waiting = pending_create(
            run_id=ex.run_id,
            conversation_id=ex.conversation.pk,
            call=call,
            agent_id=str(ex.agent.pk),
            kind=pending,
        )
        return row, waiting.expires_at


def _call_message(ex: Execution, call: ToolCall, execution: str | None) -> uuid.UUID:
    return Message.objects.create(
        conversation_id=ex.conversation.pk,
        agent=ex.agent,
        role=MessageRole.AGENT,
        type=MessageType.TOOL_CALL,
        status=MessageStatus.COMPLETE,
        content=json.dumps(call.arguments, ensure_ascii=False),
        metadata={
            "toolCallId": call.id,
            "tool": call.name,
            "parameters": call.arguments,
            "execution": execution,
            "run_id": ex.run_id,
            "agent_id": str(ex.agent.pk),
        },
    ).pk


def _set_call_seq(message_id: uuid.UUID, seq: int) -> None:
    Message.objects.filter(pk=message_id).update(seq=seq)


def store_tool_result(
    *,
    conversation_id: uuid.UUID | str,
    run_id: uuid.UUID | str,
    tool_call_id: str,
    tool: str,
    agent_id: str,
    result: Any,
    is_error: bool,
) -> Message | None:
    """Store the result of one call of one run once; None if it already has one (first result wins)."""
    content = json.dumps(result, ensure_ascii=False, default=str)[:MAX_RESULT_CHARS]
    try:
        with transaction.atomic():
            return Message.objects.create(
                conversation_id=conversation_id,
                role=MessageRole.TOOL,
                type=MessageType.TOOL_RESULT,
                status=MessageStatus.ERROR if is_error else MessageStatus.COMPLETE,
                content=content,
                client_message_id=tool_result_key(run_id, tool_call_id),
                metadata={
                    "toolCallId": tool_call_id,
                    "run_id": str(run_id),
                    "tool": tool,
                    "agent_id": agent_id,
                    "is_error": is_error,
                },
            )
    except IntegrityError:
        return None


def _stored_result(
    conversation_id: uuid.UUID | str, run_id: uuid.UUID | str, tool_call_id: str
) -> dict[str, Any] | None:
    row = Message.objects.filter(
        conversation_id=conversation_id, client_message_id=tool_result_key(run_id, tool_call_id)
    ).first()
    if row is None:
        return None
    try:
        result = json.loads(row.content)
    except ValueError:
        result = row.content
    return {"result": result, "is_error": bool(row.metadata.get("is_error"))}


def _set_result_seq(
    conversation_id: uuid.UUID | str, run_id: uuid.UUID | str, tool_call_id: str, seq: int
) -> None:
    Message.objects.filter(
        conversation_id=conversation_id, client_message_id=tool_result_key(run_id, tool_call_id)
    ).update(seq=seq)


async def run_tool_call(
    ex: Execution, call: ToolCall, execution: str | None, *, policy: Policy = "run"
) -> dict[str, Any] | None:
    """Execute one tool call of a run; returns {"result", "is_error"} to feed back to the model, or
    None when the call now waits (a client tool, or a server tool ``policy`` says to ask about):
    it is stored with its pending row (``runs.approvals``) and the run pauses after it.

    ``execution``: "server", "client" or "mcp" (an MCP server's tool, shown to watchers as
    "server") as the agent lists the tool, None when the agent does not list it: then the call is
    refused, shown and stored with its error result, and nothing runs.
    ``policy``: the agent's approval rules for this call (``runs.approvals.tool_policy``)."""
    agent_id = str(ex.agent.pk)
    if execution == "mcp":
        execution = "server"
    refused = execution is None
    if refused:
        # The name only if it is an identifier, never the arguments: logs hold no message contents.
        logger.warning(
            "run %s: the model called %s, a tool agent %s does not list; refused",
            ex.run_id,
            loggable_tool_name(call.name),
            agent_id,
        )
        execution = "server"
    pending: str | None = None
    if execution == "client":
        pending = PendingKind.CLIENT
    elif not refused and policy == "ask":
        pending = PendingKind.APPROVAL
    # Stored (with its pending row) before it is announced: a client may answer, a person approve,
    # the moment they see the call, in any process (runs.tool_answers, runs.approvals).
    call_row, expires_at = await sync_to_async(_store_call)(ex, call, execution, pending)
    seq = await ex.writer.emit_now(
        ToolCallRequested(
            tool_call_id=call.id,
            tool=call.name,
            parameters=call.arguments,
            message_id=ex.message_id,
            execution=execution,
            agent_id=agent_id,
            run_id=ex.run_id,
        )
    )
    await sync_to_async(_set_call_seq)(call_row, seq)
    if pending is not None:
        if pending == PendingKind.APPROVAL:
            assert expires_at is not None  # stored with the row
            await ex.writer.emit_now(
                ApprovalRequired(
                    tool_call_id=call.id,
                    tool=call.name,
                    parameters=call.arguments if isinstance(call.arguments, dict) else {},
                    run_id=ex.run_id,
                    agent_id=agent_id,
                    message_id=ex.message_id,
                    expires_at=expires_at,
                )
            )
        return None
    if refused:
        outcome = refused_outcome(call.name)
    elif policy == "deny":
        outcome = denied_outcome(call.name, "rule")
    else:
        outcome = await _server_tool(ex, call)
    return await _give_result(ex, call, outcome)


async def resume_call(ex: Execution, call: ToolCall) -> dict[str, Any]:
    """The outcome of a call the run waited on, now decided: an approved server tool runs, a
    denied or unanswered one gets an error result; a client tool's answer is the stored result (or
    its timeout's)."""
    row = await sync_to_async(pending_of)(ex.run_id, call.id)
    if row is not None and row.kind == PendingKind.APPROVAL:
        if row.status == PendingStatus.APPROVED:
            outcome = await _server_tool(ex, call)
        else:
            outcome = denied_outcome(call.name, row.status)
        return await _give_result(ex, call, outcome)
    stored = await sync_to_async(_stored_result)(ex.conversation.pk, ex.run_id, call.id)
    if stored is None:
        timeout_result = {
            "error": f"The client did not answer {call.name} within {settings.NEXUS_CLIENT_TOOL_TIMEOUT:g} s."
        }
        return await _give_result(ex, call, {"result": timeout_result, "is_error": True})
    return await _give_result(ex, call, stored, stored_already=True)


async def _give_result(
    ex: Execution, call: ToolCall, outcome: dict[str, Any], *, stored_already: bool = False
) -> dict[str, Any]:
    """Store a call's result (the first one stored wins: an answer that landed first is kept) and
    tell the watchers."""
    conversation_id = ex.conversation.pk
    if not stored_already:
        stored = await sync_to_async(store_tool_result)(
            conversation_id=conversation_id,
            run_id=ex.run_id,
            tool_call_id=call.id,
            tool=call.name,
            agent_id=str(ex.agent.pk),
            result=outcome["result"],
            is_error=outcome["is_error"],
        )
        if stored is None:
            outcome = await sync_to_async(_stored_result)(conversation_id, ex.run_id, call.id) or outcome
    seq = await ex.writer.emit_now(
        ToolResultGiven(
            tool_call_id=call.id,
            tool=call.name,
            result=outcome["result"],
            is_error=outcome["is_error"],
            agent_id=str(ex.agent.pk),
            run_id=ex.run_id,
        )
    )
    await sync_to_async(_set_result_seq)(conversation_id, ex.run_id, call.id, seq)
    return outcome


async def _server_tool(ex: Execution, call: ToolCall) -> dict[str, Any]:
    """Run a server tool: one of the registry's, or an MCP server's (``ex.mcp_bindings``)."""
    context = ToolContext(
        user_id=ex.conversation.owner_id, conversation_id=str(ex.conversation.pk), agent_id=str(ex.agent.pk)
    )
    binding = ex.mcp_bindings.get(call.name)
    if binding is not None:
        outcome = await execute_mcp_tool(binding, call.arguments, context=context)
    else:
        outcome = await execute_server_tool(call.name, call.arguments, context=context)
    return {"result": outcome.result, "is_error": outcome.is_error}
