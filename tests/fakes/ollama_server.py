"""A fake Ollama server: ``POST /api/chat`` (NDJSON stream or one JSON), ``GET /api/tags``, ``GET /api/version``.

Run it alone with ``python -m tests.fakes.ollama_server --port 0`` (prints ``READY <port>``).
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.embeddings import DEFAULT_DIMENSION, fake_vector
from tests.fakes.script import Reply
from tests.fakes.server import FakeServer, Plan, RecordedRequest, json_plan, main

CREATED_AT = "2026-01-01T00:00:00.000000Z"
DONE_REASON = {"stop": "stop", "length": "length", "tool_calls": "stop", "content_filter": "stop"}


def _line(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"


class FakeOllama(FakeServer):
    """Speaks Ollama's native chat API (WIRE.md section 3.2)."""

    dialect = "ollama"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = ["llama3.2:latest", "qwen2.5:0.5b"]

    def route(self, request: RecordedRequest) -> Plan:
        if request.method == "GET" and request.path == "/api/tags":
            return json_plan({"models": [self._tag(m) for m in self.models]})
        if request.method == "GET" and request.path == "/api/version":
            return json_plan({"version": "0.6.3"})
        if request.method == "POST" and request.path == "/api/chat":
            body = request.json or {}
            reply = self.next_reply()
            objects = self.objects(reply, body.get("model", "llama3.2"))
            if body.get("stream", True):
                return Plan(
                    headers={"content-type": "application/x-ndjson"},
                    frames=(_line(o) for o in objects),
                    reply=reply,
                    malformed=b'{"model":"llama3.2","message":{"role":\n',
                    error_frame=_line({"error": reply.error_message}),
                )
            plan = json_plan(self.merge(objects))
            plan.reply = reply
            return plan
        if request.method == "POST" and request.path == "/api/embed":
            body = request.json or {}
            reply = self.next_reply()
            texts = body.get("input") if isinstance(body.get("input"), list) else [body.get("input", "")]
            dimension = reply.extra.get("dimension") or DEFAULT_DIMENSION
            plan = json_plan(
                {
                    "model": body.get("model"),
                    "embeddings": [fake_vector(str(t), dimension) for t in texts],
                    "total_duration": 14143917,
                    "load_duration": 1019500,
                    "prompt_eval_count": sum(len(str(t).split()) for t in texts),
                }
            )
            plan.reply = reply
            return plan
        return json_plan({"error": "not found"}, status=404)

    @staticmethod
    def _tag(name: str) -> dict:
        return {
            "name": name,
            "model": name,
            "modified_at": CREATED_AT,
            "size": 1000,
            "digest": "0" * 64,
            "details": {
                "format": "gguf",
                "family": "llama",
                "families": ["llama"],
                "parameter_size": "1B",
                "quantization_level": "Q4_0",
            },
        }

    def error_plan(self, reply: Reply) -> Plan:
        headers = {"retry-after": str(reply.retry_after)} if reply.retry_after is not None else {}
        return json_plan({"error": reply.error_message}, status=reply.status, headers=headers)

    def objects(self, reply: Reply, model: str) -> list[dict]:
        """The NDJSON objects: one per text piece, one per tool call, then the ``done`` object."""

        def message(**fields: Any) -> dict:
            return {
                "model": model,
                "created_at": CREATED_AT,
                "message": {"role": "assistant", **fields},
                "done": False,
            }

        out = [message(content=piece) for piece in reply.pieces()]
        for call in reply.tool_calls:
            function: dict[str, Any] = {"name": call.name, "arguments": call.arguments}
            tool_call: dict[str, Any] = {"function": function}
            if call.id:
                tool_call["id"] = call.id
            out.append(message(content="", tool_calls=[tool_call]))
        done = message(content="")
        done |= {"done": True, "done_reason": DONE_REASON[reply.final_reason()], "total_duration": 1_000_000}
        usage = reply.final_usage()
        if usage is not None:
            done |= {
                "prompt_eval_count": usage[0],
                "prompt_eval_duration": 100_000,
                "eval_count": usage[1],
                "eval_duration": 900_000,
            }
        out.append(done)
        return out

    @staticmethod
    def merge(objects: list[dict]) -> dict:
        content = "".join(o["message"].get("content", "") for o in objects)
        calls = [c for o in objects for c in o["message"].get("tool_calls", [])]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        return {**objects[-1], "message": message}


if __name__ == "__main__":
    main(FakeOllama)
