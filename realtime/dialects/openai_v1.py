"""The OpenAI-compatible dialect of ``/v1`` (SPEC section 11; docs/v1.md): Chat Completions and
Open Responses requests read into what Nexus's services take, and a run's logged events rendered
as ``chat.completion.chunk`` objects or Responses stream events.

``RunSteps`` reads the logged events of one Nexus run into neutral steps (text, a tool call, the
end); ``ChatStream`` and ``ResponsesStream`` render those steps in their API's shapes, streamed or
gathered into one object. They are stateful, so each HTTP request has its own. The views are
``realtime/v1_views.py``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from core.errors import ValidationFailed
from realtime import protocol
from runs.eventlog.base import LoggedEvent

CHARS_PER_TOKEN = 4  # the estimate of providers/tokens.py, for a reply cut at a client tool call
MAX_MESSAGES = 500


def sse_data(data: Any, *, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


# --- the requests ---------------------------------------------------------------------------------


@dataclass(slots=True)
class V1Plan:
    """What one ``/v1`` request asks of Nexus, in either API.

    ``model``: the agent (an id or a slug); ``send``: the new user message (None when the request
    only answers tool calls); ``history``: earlier user/assistant turns, stored when this request
    starts a conversation; ``tool_answers``: (call id, result, is_error); ``client_tools``: the
    request's ``tools`` as Nexus client tool specs; ``instructions``: system/developer text (the
    conversation's context key ``instructions``); ``previous``: Responses' ``previous_response_id``."""

    model: str
    stream: bool = False
    include_usage: bool = False
    send: str | None = None
    history: list[dict[str, str]] = field(default_factory=list)
    tool_answers: list[tuple[str, Any, bool]] = field(default_factory=list)
    client_tools: list[dict[str, Any]] = field(default_factory=list)
    instructions: str | None = None
    previous: str | None = None
    echo: dict[str, Any] = field(default_factory=dict)


def _fail(message: str, param: str) -> ValidationFailed:
    return ValidationFailed(message, details={param: [message]})


def _no_nul(text: str, where: str) -> str:
    if "\x00" in text:  # PostgreSQL stores none: refused here, not a 500 there
        raise _fail("NUL characters are not allowed.", where)
    return text


def _text(content: Any, where: str, part_types: tuple[str, ...]) -> str:
    """A message's content as text: a string, or a list of text parts (media is refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return _no_nul(content, where)
    if not isinstance(content, list):
        raise _fail("content must be a string or a list of text parts.", where)
    texts = []
    for part in content:
        if (
            not isinstance(part, dict)
            or part.get("type") not in part_types
            or not isinstance(part.get("text"), str)
        ):
            raise _fail(f"Only text content parts ({', '.join(part_types)}) are supported.", where)
        texts.append(part["text"])
    return _no_nul("".join(texts), where)


def _tool_result(content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip() or len(model) > 200:
        raise _fail("model is required: an agent's id or slug (GET /v1/models).", "model")
    return model.strip()


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _fail(f"{name} must be a boolean.", name)
    return value


def _function_tools(tools: Any, *, nested: bool) -> list[dict[str, Any]]:
    """``tools`` as Nexus client tool specs. Chat Completions nests the function
    (``{type, function: {name, ...}}``), Responses does not (``{type, name, ...}``)."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise _fail("tools must be a list.", "tools")
    specs = []
    for index, tool in enumerate(tools):
        where = f"tools.{index}"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise _fail("Only function tools are supported.", where)
        function = tool.get("function") if nested else tool
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _fail("A function tool needs a name.", where)
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        specs.append(
            {
                "name": function["name"],
                "description": function.get("description") or "",
                "parameters": parameters,
                "execution": "client",
            }
        )
    return specs


def _tool_choice_none(body: dict[str, Any]) -> bool:
    return body.get("tool_choice") == "none"


def chat_request_parse(body: dict[str, Any]) -> V1Plan:
    """A ``POST /v1/chat/completions`` body read into a ``V1Plan``; ``ValidationFailed`` (400)
    with the field for anything Nexus does not take."""
    plan = V1Plan(model=_model(body), stream=_bool(body, "stream"))
    n = body.get("n")
    if n is not None and n != 1:
        raise _fail("Only n=1 is supported.", "n")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise _fail("stream_options must be an object.", "stream_options")
        plan.include_usage = bool(options.get("include_usage"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail("messages must be a non-empty list.", "messages")
    if len(messages) > MAX_MESSAGES:
        raise _fail(f"At most {MAX_MESSAGES} messages.", "messages")
    turns: list[tuple[int, dict[str, Any]]] = []
    instructions: list[str] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict) or message.get("role") not in (
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
        ):
            raise _fail("Each message needs a role: system, developer, user, assistant or tool.", where)
        if message["role"] in ("system", "developer"):
            text = _text(message.get("content"), where, ("text",))
            if text.strip():
                instructions.append(text)
        else:
            turns.append((index, message))
    plan.instructions = "\n\n".join(instructions) or None
    last_assistant = max((n for n, (_, m) in enumerate(turns) if m["role"] == "assistant"), default=-1)
    for index, message in turns[last_assistant + 1 :]:
        where = f"messages.{index}"
        if message["role"] == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _fail("A tool message needs its tool_call_id.", where)
            plan.tool_answers.append(
                (call_id, _tool_result(_text(message.get("content"), where, ("text",))), False)
            )
        else:
            plan.send = _text(message.get("content"), where, ("text",))
    if turns and turns[-1][1]["role"] != "user":
        plan.send = None  # a user message before the tool answers: sent already
    for index, message in turns[: last_assistant + 1]:
        if message["role"] in ("user", "assistant"):
            text = _text(message.get("content"), f"messages.{index}", ("text",))
            if text.strip():
                plan.history.append({"role": message["role"], "content": text})
    if plan.send is not None and not plan.send.strip():
        raise _fail("The last user message is empty.", "messages")
    if plan.send is None and not plan.tool_answers:
        raise _fail("The last message must be a user message or tool results.", "messages")
    if not _tool_choice_none(body):
        plan.client_tools = _function_tools(body.get("tools"), nested=True)
    return plan


def responses_request_parse(body: dict[str, Any]) -> V1Plan:
    """A ``POST /v1/responses`` body read into a ``V1Plan``."""
    plan = V1Plan(model=_model(body), stream=_bool(body, "stream"))
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _fail("instructions must be a string.", "instructions")
        plan.instructions = _no_nul(instructions, "instructions") or None
    previous = body.get("previous_response_id")
    if previous is not None:
        if not isinstance(previous, str) or not previous:
            raise _fail("previous_response_id must be a response id.", "previous_response_id")
        plan.previous = previous
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise _fail("store must be a boolean.", "store")
    items = body.get("input")
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    if not isinstance(items, list) or not items:
        raise _fail("input must be a string or a non-empty list of items.", "input")
    if len(items) > MAX_MESSAGES:
        raise _fail(f"At most {MAX_MESSAGES} input items.", "input")
    parts = ("input_text", "output_text", "text")
    turns: list[tuple[int, dict[str, str]]] = []
    extra_instructions: list[str] = []
    for index, item in enumerate(items):
        where = f"input.{index}"
        if not isinstance(item, dict):
            raise _fail("Each input item is an object.", where)
        kind = item.get("type") or "message"
        if kind == "function_call_output":
            call_id = item.get("call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _fail("A function_call_output needs its call_id.", where)
            output = item.get("output")
            text = output if isinstance(output, str) else json.dumps(output)
            plan.tool_answers.append((call_id, _tool_result(_no_nul(text, where)), False))
        elif kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _fail("A message item's role is user, assistant, system or developer.", where)
            text = _text(item.get("content"), where, parts)
            if role in ("system", "developer"):
                if text.strip():
                    extra_instructions.append(text)
            elif text.strip():
                turns.append((index, {"role": role, "content": text}))
        elif kind in ("function_call", "reasoning"):
            continue  # the model's own output, echoed back by a client that keeps the thread
        else:
            raise _fail(f"Input items of type {kind!r} are not supported.", where)
    if extra_instructions:
        plan.instructions = "\n\n".join(
            [*([plan.instructions] if plan.instructions else []), *extra_instructions]
        )
    if turns and turns[-1][1]["role"] == "user" and (items[-1].get("type") or "message") == "message":
        plan.send = turns[-1][1]["content"]
        turns = turns[:-1]
    plan.history = [turn for _, turn in turns]
    if plan.send is None and not plan.tool_answers:
        raise _fail("input must end with a user message, or carry function_call_output items.", "input")
    if plan.tool_answers and plan.previous is None:
        raise _fail("function_call_output needs the previous_response_id it answers.", "previous_response_id")
    if not _tool_choice_none(body):
        plan.client_tools = _function_tools(body.get("tools"), nested=False)
    plan.echo = {
        "instructions": plan.instructions,
        "previous_response_id": plan.previous,
        "store": True,
        "tools": body.get("tools") or [],
        "tool_choice": body.get("tool_choice") or "auto",
        "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
    }
    return plan


# --- the run's events, as steps ------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    """``text`` (``text``), ``tool_call`` (``call_id``, ``name``, ``arguments`` as JSON text), or
    ``end``: ``status`` (``completed``, ``stopped``, ``tool_calls``, ``failed``...), ``usage``,
    ``error``."""

    kind: str
    text: str = ""
    call_id: str = ""
    name: str = ""
    arguments: str = ""
    status: str = ""
    usage: dict[str, int] | None = None
    error: dict[str, Any] | None = None


class RunSteps:
    """The logged events of one Nexus run, read as steps. A call of a client tool (one the request
    offered, or one of the agent's own ``execution: "client"`` tools) ends the steps with status
    ``tool_calls``: the run waits for the answer, which the next request brings. Server tools run
    inside the reply and are not shown."""

    def __init__(self, nexus_run_id: str, reply_id: str | None = None) -> None:
        self.nexus_run_id = nexus_run_id
        self.reply_id = reply_id
        self.error: dict[str, Any] | None = None
        self.done = False
        self.emitted_chars = 0

    def fail(self, message: str, code: str) -> Step:
        self.done = True
        return Step("end", status="failed", error={"code": code, "message": message})

    def steps(self, evt: LoggedEvent) -> list[Step]:
        if self.done:
            return []
        if protocol.conversation_ending(evt) == "conversation_deleted":
            return [self.fail("The conversation was deleted.", "conversation_deleted")]
        kind, data = protocol.event_fields(evt.payload)
        run_id = data.get("run_id") or (data.get("details") or {}).get("run_id")
        mine = run_id == self.nexus_run_id
        if kind == "run_started" and mine:
            self.reply_id = data.get("message_id") or self.reply_id
        elif kind == "streaming_chunk":
            if self.reply_id and data.get("messageId") == self.reply_id and data.get("chunk"):
                self.emitted_chars += len(data["chunk"])
                return [Step("text", text=data["chunk"])]
        elif kind == "tool_call" and mine and data.get("execution") == "client":
            self.done = True
            arguments = json.dumps(data.get("parameters") or {}, ensure_ascii=False)
            self.emitted_chars += len(arguments)
            estimate = math.ceil(self.emitted_chars / CHARS_PER_TOKEN)
            return [
                Step(
                    "tool_call",
                    call_id=str(data.get("toolCallId")),
                    name=str(data.get("tool")),
                    arguments=arguments,
                ),
                Step("end", status="tool_calls", usage={"input_tokens": 0, "output_tokens": estimate}),
            ]
        elif kind == "error" and mine:
            self.error = {"code": data.get("code"), "message": data.get("message")}
        elif kind == "run_finished" and mine:
            self.done = True
            if data.get("error"):
                self.error = {**(self.error or {}), **data["error"]}
            status = str(data.get("status") or "failed")
            error = None
            if status not in ("completed", "stopped", "incomplete"):
                error = {
                    "code": str((self.error or {}).get("code") or status),
                    "message": str((self.error or {}).get("message") or "The run failed."),
                }
            return [Step("end", status=status, usage=data.get("usage") or {}, error=error)]
        return []


def _usage_numbers(usage: dict[str, Any] | None) -> tuple[int, int]:
    usage = usage or {}
    return int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)


# --- Chat Completions -----------------------------------------------------------------------------

FINISH_REASONS = {"completed": "stop", "stopped": "stop", "incomplete": "length", "tool_calls": "tool_calls"}


class ChatStream:
    """One chat completion: ``chunk_events`` renders steps as ``chat.completion.chunk`` objects
    (streaming); ``completion`` gathers them into one ``chat.completion``."""

    def __init__(self, *, completion_id: str, model: str, include_usage: bool) -> None:
        self.id = completion_id
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self.text: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.finish: str | None = None
        self.usage: dict[str, int] | None = None
        self.error: dict[str, Any] | None = None
        self.role_sent = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self) -> dict[str, Any]:
        self.role_sent = True
        return self._chunk({"role": "assistant", "content": ""})

    def chunks(self, step: Step) -> list[dict[str, Any]]:
        if step.kind == "text":
            self.text.append(step.text)
            return [self._chunk({"content": step.text})]
        if step.kind == "tool_call":
            call = {
                "index": len(self.calls),
                "id": step.call_id,
                "type": "function",
                "function": {"name": step.name, "arguments": step.arguments},
            }
            self.calls.append(call)
            return [self._chunk({"tool_calls": [call]})]
        if step.error is not None:
            self.error = step.error
            return []
        self.finish = FINISH_REASONS.get(step.status, "stop")
        prompt, completion = _usage_numbers(step.usage)
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        out = [self._chunk({}, self.finish)]
        if self.include_usage:
            out.append({**self._chunk({}), "choices": [], "usage": self.usage})
        return out

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(self.text) or None,
            "refusal": None,
        }
        if self.calls:
            message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in self.calls]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish or "stop"}
            ],
            "usage": self.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


# --- Responses ------------------------------------------------------------------------------------

RESPONSE_STATUS = {
    "completed": "completed",
    "tool_calls": "completed",
    "stopped": "incomplete",
    "incomplete": "incomplete",
}


class ResponsesStream:
    """One response of the Responses API: ``events`` renders steps as its stream events (each a
    dict with ``type`` and ``sequence_number``); ``response()`` is the response object so far."""

    def __init__(self, *, response_id: str, model: str, echo: dict[str, Any], message_id: str) -> None:
        self.id = response_id
        self.model = model
        self.echo = echo
        self.message_id = message_id
        self.created = int(time.time())
        self.status = "in_progress"
        self.output: list[dict[str, Any]] = []
        self.open_message: dict[str, Any] | None = None
        self.usage: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.incomplete: dict[str, Any] | None = None
        self.seq = 0

    def response(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": self.status,
            "model": self.model,
            "output": self.output,
            "usage": self.usage,
            "error": self.error,
            "incomplete_details": self.incomplete,
            "parallel_tool_calls": False,
            "temperature": None,
            "top_p": None,
            "truncation": "disabled",
            "text": {"format": {"type": "text"}},
            **self.echo,
        }

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return event

    def opening(self) -> list[dict[str, Any]]:
        return [
            self._event("response.created", response=self.response()),
            self._event("response.in_progress", response=self.response()),
        ]

    def _close_message(self) -> list[dict[str, Any]]:
        item = self.open_message
        if item is None:
            return []
        self.open_message = None
        index = len(self.output) - 1
        part = item["content"][0]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return [
            self._event("response.output_text.done", **where, text=part["text"], logprobs=[]),
            self._event("response.content_part.done", **where, part=part),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def events(self, step: Step) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if step.kind == "text":
            if self.open_message is None:
                item_id = f"msg_{self.message_id}_{len(self.output)}"
                self.open_message = {
                    "type": "message",
                    "id": item_id,
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                }
                self.output.append(self.open_message)
                index = len(self.output) - 1
                out.append(
                    self._event("response.output_item.added", output_index=index, item={**self.open_message})
                )
                part = {"type": "output_text", "text": "", "annotations": []}
                out.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item_id,
                        output_index=index,
                        content_index=0,
                        part={**part},
                    )
                )
                self.open_message["content"].append(part)
            item = self.open_message
            item["content"][0]["text"] += step.text
            out.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=len(self.output) - 1,
                    content_index=0,
                    delta=step.text,
                    logprobs=[],
                )
            )
            return out
        out.extend(self._close_message())
        if step.kind == "tool_call":
            item = {
                "type": "function_call",
                "id": f"fc_{step.call_id}",
                "call_id": step.call_id,
                "name": step.name,
                "arguments": "",
                "status": "in_progress",
            }
            self.output.append(item)
            index = len(self.output) - 1
            out.append(self._event("response.output_item.added", output_index=index, item={**item}))
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=step.arguments,
                )
            )
            item["arguments"] = step.arguments
            item["status"] = "completed"
            out.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=step.name,
                    arguments=step.arguments,
                )
            )
            out.append(self._event("response.output_item.done", output_index=index, item=item))
            return out
        prompt, completion = _usage_numbers(step.usage)
        self.usage = {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion,
        }
        if step.error is not None:
            self.status = "failed"
            self.error = {"code": step.error["code"], "message": step.error["message"]}
            out.append(self._event("response.failed", response=self.response()))
            return out
        self.status = RESPONSE_STATUS.get(step.status, "completed")
        if self.status == "incomplete":
            self.incomplete = {"reason": "stopped" if step.status == "stopped" else "max_output_tokens"}
            out.append(self._event("response.incomplete", response=self.response()))
        else:
            out.append(self._event("response.completed", response=self.response()))
        return out
