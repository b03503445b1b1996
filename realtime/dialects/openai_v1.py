"""The OpenAI-compatible dialect of ``/v1`` (SPEC section 11; docs/v1.md): a run's logged events
rendered as ``chat.completion.chunk`` objects or Responses stream events.

``RunSteps`` reads the logged events of one Nexus run into neutral steps (text, a tool call, the
end); ``ChatStream`` and ``ResponsesStream`` render those steps in their API's shapes, streamed or
gathered into one object. They are stateful, so each HTTP request has its own. The requests are
read by ``realtime.dialects.openai_v1_requests``; the views are ``realtime/v1_views.py``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import orjson

from realtime import protocol
from runs.eventlog.base import LoggedEvent

CHARS_PER_TOKEN = 4  # the estimate of providers/tokens.py, for a reply cut at a client tool call


def sse_data(data: Any, *, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


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
