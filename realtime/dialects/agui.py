"""The AG-UI 1.0 dialect (seed 003; docs/dialects.md, "AG-UI"): a ``RunAgentInput`` read into
what Nexus's services take, and a run's logged events rendered as AG-UI events.

The event models and the SSE encoder are the ``ag-ui-protocol`` package's (``ag_ui.core``,
``ag_ui.encoder``), so what goes out is what the official clients validate. One
``AguiRunStream`` follows one Nexus run for one AG-UI run: it is stateful (which text message is
open, which tool calls ran on the server), so each HTTP stream has its own. The HTTP view is
``realtime/agui_views.py``.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import (
    PROTOCOL_VERSION,
    BaseEvent,
    RunAgentInput,
    RunErrorEvent,
    RunFinishedCancelledOutcome,
    RunFinishedEvent,
    RunFinishedSuccessOutcome,
    RunStartedEvent,
    TextMessageContentEvent,
    TextMessageEndEvent,
    TextMessageStartEvent,
    TokenUsage,
    ToolCallArgsEvent,
    ToolCallEndEvent,
    ToolCallResultEvent,
    ToolCallStartEvent,
)
from ag_ui.encoder import EventEncoder
from pydantic import ValidationError

from core.errors import ValidationFailed
from realtime import protocol
from runs.eventlog.base import LoggedEvent

_ENCODER = EventEncoder()
CONTENT_TYPE = _ENCODER.get_content_type()  # text/event-stream
# Thread ids that are not a conversation's id name one per user: uuid5(this, "<user>:<thread>").
THREAD_NAMESPACE = uuid.UUID("5f0c6a52-5d43-4c52-9a86-6b2f1f0a9a3e")


def encode(event: BaseEvent) -> bytes:
    """One AG-UI event as one SSE frame (``data: <json>\\n\\n``, LF only, no null fields)."""
    return _ENCODER.encode(event).encode()


# --- the request ------------------------------------------------------------------------------


@dataclass(slots=True)
class RunPlan:
    """What one ``RunAgentInput`` asks of Nexus.

    ``send``: the text of the new user message to send (None when the run answers tool calls
    only) and ``send_id``, its AG-UI message id; ``history``: earlier user/assistant turns, stored
    only when this request creates the conversation; ``tool_answers``: (toolCallId, content,
    is_error) for each ``tool`` message after the last assistant message; ``client_tools``: the
    frontend tools as Nexus client tool specs; ``context``: what the conversation's context gets
    (``state`` and the ``context`` items)."""

    agui: RunAgentInput
    send: str | None = None
    send_id: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    tool_answers: list[tuple[str, Any, bool]] = field(default_factory=list)
    client_tools: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def _text(content: Any, where: str) -> str:
    """A message's content as text: a string, or text parts (other media are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _no_nul(content, where)
    texts = []
    for part in content:
        if getattr(part, "type", None) != "text":
            raise ValidationFailed(
                "Only text content is supported.", details={where: ["Text parts only (no media)."]}
            )
        texts.append(part.text)
    return _no_nul("".join(texts), where)


def _no_nul(text: str, where: str) -> str:
    if "\x00" in text:  # PostgreSQL stores none: refused here, not a 500 there
        raise ValidationFailed(
            "NUL characters are not allowed.", details={where: ["Contains a NUL character."]}
        )
    return text


def run_input_parse(raw: bytes) -> RunPlan:
    """Read a ``RunAgentInput`` body (camelCase or snake_case) into a ``RunPlan``; a clear 400
    (``ValidationFailed``) for anything else."""
    try:
        agui = RunAgentInput.model_validate_json(raw or b"null")
    except ValidationError as exc:
        details = {".".join(str(p) for p in err["loc"]) or "body": [err["msg"]] for err in exc.errors()[:20]}
        raise ValidationFailed("The body is not a valid AG-UI RunAgentInput.", details=details) from None
    for name in ("thread_id", "run_id"):
        value = getattr(agui, name)
        if not value.strip() or len(value) > protocol.MAX_ID_CHARS or "\x00" in value:
            raise ValidationFailed(
                f"{name} must be a non-empty id of at most {protocol.MAX_ID_CHARS} characters.",
                details={name: ["Invalid id."]},
            )
    plan = RunPlan(agui=agui)
    # system, developer, reasoning and activity messages are not the thread's turns: ignored.
    messages = [(i, m) for i, m in enumerate(agui.messages) if m.role in ("user", "assistant", "tool")]
    # The tail after the last assistant message is what is new in this run: tool answers and/or
    # the new user message. Earlier turns are the thread's history.
    last_assistant = max((n for n, (_, m) in enumerate(messages) if m.role == "assistant"), default=-1)
    for index, message in messages[last_assistant + 1 :]:
        where = f"messages.{index}"
        if message.role == "tool":
            content = _text(message.content, where)
            try:
                result: Any = json.loads(content)
            except ValueError:
                result = content
            plan.tool_answers.append((message.tool_call_id, result, bool(message.error)))
        elif message.role == "user":
            plan.send = _text(message.content, where)
            plan.send_id = _no_nul(message.id, f"{where}.id")
    if messages and messages[-1][1].role != "user":
        plan.send = plan.send_id = None  # the user message is before the tool answers: already sent
    for index, message in messages[: last_assistant + 1]:
        if message.role in ("user", "assistant"):
            text = _text(message.content, f"messages.{index}")
            if text.strip():
                plan.history.append({"role": message.role, "content": text})
    if plan.send is None and not plan.tool_answers:
        raise ValidationFailed(
            "Nothing to run: the last message must be a user message or tool results.",
            details={"messages": ["End with a user message, or with tool messages."]},
        )
    for tool in agui.tools or []:
        spec: dict[str, Any] = {
            "name": tool.name,
            "description": tool.description or "",
            "execution": "client",
        }
        spec["parameters"] = tool.parameters or {"type": "object", "properties": {}}
        plan.client_tools.append(spec)
    if agui.state not in (None, {}):
        plan.context["state"] = agui.state
    for item in agui.context or []:
        plan.context[item.description or "context"] = item.value
    return plan


def thread_conversation_id(user_id: Any, thread_id: str) -> uuid.UUID:
    """The id of the conversation a thread that names none gets: the same for the same user and
    thread, different across users (no user can take or reach another's thread)."""
    return uuid.uuid5(THREAD_NAMESPACE, f"{user_id}:{thread_id}")


def client_message_key(message_id: str) -> str:
    """The ``client_message_id`` of a user message sent from AG-UI: resending its id is idempotent."""
    key = f"agui:{message_id}"
    return key if len(key) <= protocol.MAX_ID_CHARS else "agui:" + hashlib.sha256(key.encode()).hexdigest()


# --- the events -------------------------------------------------------------------------------


class AguiRunStream:
    """Renders the logged events of one Nexus run (``nexus_run_id``) as one AG-UI run's events.

    Text: a run's reply streams in segments (text, then tool calls, then text...); each segment
    is one AG-UI text message whose id is ``<reply id>.<seq of its first chunk>``, unique and the
    same on every replay. A tool call closes the open segment and is START/ARGS/END; a server
    tool's result is TOOL_CALL_RESULT; a client (frontend) tool ends the AG-UI run with
    RUN_FINISHED and the call pending, while the Nexus run waits for its answer (the next AG-UI
    run's ``tool`` message). The Nexus run's end is RUN_FINISHED, or RUN_ERROR when it failed."""

    name = "agui"

    def __init__(
        self, *, thread_id: str, run_id: str, nexus_run_id: str, reply_id: str | None = None
    ) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        self.nexus_run_id = nexus_run_id
        self.reply_id = reply_id
        self.open_text: str | None = None
        self.last_text: str | None = None
        self.server_calls: set[str] = set()
        self.pending: list[str] = []
        self.error: dict[str, Any] | None = None
        self.done = False

    def started(self) -> RunStartedEvent:
        return RunStartedEvent(
            thread_id=self.thread_id, run_id=self.run_id, protocol_version=PROTOCOL_VERSION
        )

    def render(self, evt: LoggedEvent, *, frame_bytes: int = 0) -> Sequence[str]:
        """The ``Codec`` interface: the events as JSON text (AG-UI over HTTP has no frame limit)."""
        return [e.model_dump_json(by_alias=True) for e in self.events(evt)]

    def _close_text(self) -> list[BaseEvent]:
        if self.open_text is None:
            return []
        closing = TextMessageEndEvent(message_id=self.open_text)
        self.open_text = None
        return [closing]

    def _finish(self, status: str | None, usage: dict[str, Any] | None) -> list[BaseEvent]:
        self.done = True
        out = self._close_text()
        if status not in ("completed", "stopped"):
            error = self.error or {}
            message = str(error.get("message") or "The run failed.")
            out.append(RunErrorEvent(message=message, code=str(error.get("code") or status or "failed")))
            return out
        tokens = None
        if usage:
            tokens = [
                TokenUsage(
                    input_tokens=usage.get("input_tokens"),
                    output_tokens=usage.get("output_tokens"),
                    total_tokens=usage.get("total_tokens"),
                )
            ]
        outcome = RunFinishedCancelledOutcome() if status == "stopped" else None
        out.append(
            RunFinishedEvent(thread_id=self.thread_id, run_id=self.run_id, outcome=outcome, usage=tokens)
        )
        return out

    def fail(self, message: str, code: str) -> RunErrorEvent:
        """The terminal event of a stream that cannot go on (the conversation gone, the log lost)."""
        self.done = True
        return RunErrorEvent(message=message, code=code)

    def events(self, evt: LoggedEvent) -> list[BaseEvent]:
        if self.done:
            return []
        if protocol.conversation_ending(evt) == "conversation_deleted":
            return [*self._close_text(), self.fail("The conversation was deleted.", "conversation_deleted")]
        kind, data = protocol.event_fields(evt.payload)
        run_id = data.get("run_id") or (data.get("details") or {}).get("run_id")
        mine = run_id == self.nexus_run_id
        if kind == "run_started" and mine:
            self.reply_id = data.get("message_id") or self.reply_id
            return []
        if kind == "streaming_chunk":
            if not self.reply_id or data.get("messageId") != self.reply_id:
                return []
            chunk = data.get("chunk") or ""
            if not chunk:
                return []
            out: list[BaseEvent] = []
            if self.open_text is None:
                self.open_text = self.last_text = f"{self.reply_id}.{evt.seq}"
                out.append(TextMessageStartEvent(message_id=self.open_text, role="assistant"))
            out.append(TextMessageContentEvent(message_id=self.open_text, delta=chunk))
            return out
        if kind == "tool_call" and mine:
            call_id = str(data.get("toolCallId"))
            out = self._close_text()
            parent = self.last_text or f"{self.reply_id or self.nexus_run_id}.{evt.seq}"
            out.append(
                ToolCallStartEvent(
                    tool_call_id=call_id, tool_call_name=str(data.get("tool")), parent_message_id=parent
                )
            )
            arguments = json.dumps(data.get("parameters") or {}, ensure_ascii=False)
            out.append(ToolCallArgsEvent(tool_call_id=call_id, delta=arguments))
            out.append(ToolCallEndEvent(tool_call_id=call_id))
            if data.get("execution") == "client":
                # The Nexus run now waits for the client's answer: this AG-UI run ends here.
                self.pending.append(call_id)
                self.done = True
                out.append(
                    RunFinishedEvent(
                        thread_id=self.thread_id,
                        run_id=self.run_id,
                        outcome=RunFinishedSuccessOutcome(pending_tool_call_ids=self.pending),
                    )
                )
            else:
                self.server_calls.add(call_id)
            return out
        if kind == "tool_result" and mine:
            call_id = str(data.get("toolCallId"))
            if call_id not in self.server_calls:
                return []  # a client tool's answer: the client holds it already
            result = data.get("result")
            content = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
            return [
                ToolCallResultEvent(
                    message_id=f"{call_id}.result", tool_call_id=call_id, content=content, role="tool"
                )
            ]
        if kind == "error" and mine:
            self.error = {"code": data.get("code"), "message": data.get("message")}
            return []
        if kind == "run_finished" and mine:
            if data.get("error"):
                self.error = {**(self.error or {}), **data["error"]}
            return self._finish(data.get("status"), data.get("usage"))
        return []
