"""A fake OpenAI Chat Completions server: ``POST /v1/chat/completions`` (SSE or JSON), ``GET /v1/models``.

Run it alone with ``python -m tests.fakes.openai_server --port 0`` (prints ``READY <port>``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.fakes.embeddings import DEFAULT_DIMENSION, fake_vector
from tests.fakes.script import Reply
from tests.fakes.server import FakeServer, Plan, RecordedRequest, json_plan, main

CREATED = 1795321608
FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "content_filter": "content_filter"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_exceeded"}


def _frame(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def _arguments_pieces(text: str, pieces: int) -> list[str]:
    n = max(1, min(pieces, len(text)))
    size = -(-len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


class FakeOpenAI(FakeServer):
    """Speaks OpenAI's streaming wire format as WIRE.md section 2 describes it."""

    dialect = "openai"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = ["gpt-4o-mini", "fake-model"]

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def route(self, request: RecordedRequest) -> Plan:
        if request.method == "GET" and request.path == "/v1/models":
            data = [{"id": m, "object": "model", "created": CREATED, "owned_by": "fake"} for m in self.models]
            return json_plan({"object": "list", "data": data})
        if request.method == "POST" and request.path == "/v1/chat/completions":
            body = request.json or {}
            reply = self.next_reply()
            if body.get("stream"):
                return self.stream_plan(reply, body)
            return self._whole(reply, body)
        if request.method == "POST" and request.path == "/v1/embeddings":
            return self.embeddings_plan(request.json or {})
        return json_plan({"error": {"message": "not found", "type": "invalid_request_error"}}, status=404)

    def embeddings_plan(self, body: dict) -> Plan:
        """``POST /v1/embeddings``: one vector per input (``dimensions`` honoured, else
        ``reply.extra["dimension"]``), with usage."""
        reply = self.next_reply()
        texts = body.get("input") if isinstance(body.get("input"), list) else [body.get("input", "")]
        dimension = body.get("dimensions") or reply.extra.get("dimension") or DEFAULT_DIMENSION
        data = [
            {"object": "embedding", "index": i, "embedding": fake_vector(str(t), dimension)}
            for i, t in enumerate(texts)
        ]
        words = sum(len(str(t).split()) for t in texts)
        plan = json_plan(
            {
                "object": "list",
                "data": data,
                "model": body.get("model"),
                "usage": {"prompt_tokens": words, "total_tokens": words},
            }
        )
        plan.reply = reply
        return plan

    def _whole(self, reply: Reply, body: dict) -> Plan:
        plan = json_plan(self.completion(reply, body))
        plan.reply = reply
        return plan

    def error_plan(self, reply: Reply) -> Plan:
        headers = {}
        if reply.retry_after is not None:
            headers["retry-after"] = str(reply.retry_after)
        if reply.extra.get("retry_after_ms") is not None:
            headers["retry-after-ms"] = str(reply.extra["retry_after_ms"])
        error = {
            "message": reply.error_message,
            "type": ERROR_TYPES.get(reply.status, "server_error"),
            "param": None,
            "code": None,
        }
        return json_plan({"error": error}, status=reply.status, headers=headers)

    def _tool_call_dicts(self, reply: Reply) -> list[dict]:
        return [
            {
                "id": call.id or f"call_fake_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for index, call in enumerate(reply.tool_calls)
        ]

    def completion(self, reply: Reply, body: dict) -> dict:
        """The non-streaming ``chat.completion`` body."""
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = self._tool_call_dicts(reply)
        usage = reply.final_usage() or (0, 0)
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": CREATED,
            "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "message": message, "finish_reason": FINISH[reply.final_reason()]}],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        }

    def stream_plan(self, reply: Reply, body: dict) -> Plan:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": body.get("model", "fake-model"),
            "system_fingerprint": None,
        }

        def chunk(delta: dict, finish: str | None = None) -> bytes:
            data = {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }
            if include_usage:
                data["usage"] = None
            return _frame(data)

        def frames() -> Iterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            for piece in reply.pieces():
                yield chunk({"content": piece})
            for index, call in enumerate(reply.tool_calls):
                call_id = call.id or f"call_fake_{index}"
                head = {"index": index, "id": call_id, "type": "function"}
                yield chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]})
                arguments = (
                    call.raw_arguments if call.raw_arguments is not None else json.dumps(call.arguments)
                )
                for piece in _arguments_pieces(arguments, call.pieces):
                    delta: dict[str, Any] = {"index": index, "function": {"arguments": piece}}
                    if reply.openai_repeat_ids:
                        delta = {**head, "function": {"name": call.name, "arguments": piece}}
                    yield chunk({"tool_calls": [delta]})
            if not reply.extra.get("omit_finish"):
                yield chunk({}, FINISH[reply.final_reason()])
            usage = reply.final_usage()
            if include_usage and usage is not None:
                total = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
                yield _frame({**base, "choices": [], "usage": total})
            if not reply.extra.get("omit_done"):
                yield b"data: [DONE]\n\n"

        error = {"message": reply.error_message, "type": "server_error", "code": reply.error_status}
        return Plan(
            headers={"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"},
            frames=frames(),
            reply=reply,
            malformed=b'data: {"id":"chatcmpl-fake","choices":[{"delta":\n\n',
            error_frame=_frame({"error": error}),
        )


if __name__ == "__main__":
    main(FakeOpenAI)
