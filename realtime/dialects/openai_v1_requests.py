"""The OpenAI-compatible dialect's requests (docs/v1.md): a ``POST /v1/chat/completions`` or
``POST /v1/responses`` body read into a ``V1Plan``, what Nexus's services take. Anything Nexus
does not take is a ``ValidationFailed`` (400) naming the field. The events side is
``realtime.dialects.openai_v1``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from core.errors import ValidationFailed

MAX_MESSAGES = 500


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
