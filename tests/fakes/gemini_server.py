"""A fake Gemini API server: ``POST /{version}/models/{model}:streamGenerateContent?alt=sse``,
``POST …:generateContent`` and ``GET /{version}/models``.

Run it alone with ``python -m tests.fakes.gemini_server --port 0`` (prints ``READY <port>``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tests.fakes.embeddings import DEFAULT_DIMENSION, fake_vector
from tests.fakes.script import Reply
from tests.fakes.server import FakeServer, Plan, RecordedRequest, json_plan, main

FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "content_filter": "SAFETY"}
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
STATUS |= {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MODEL_PATH = re.compile(r"^/(?P<version>[^/]+)/models/(?P<model>[^/:]+):(?P<method>\w+)$")


def _frame(data: Any) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


class FakeGemini(FakeServer):
    """Speaks the Gemini API's SSE streaming as google-genai uses it (WIRE.md section 3.1)."""

    dialect = "gemini"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.models = ["gemini-2.5-flash", "gemini-2.5-pro"]

    def route(self, request: RecordedRequest) -> Plan:
        match = MODEL_PATH.match(request.path)
        if request.method == "POST" and match:
            reply = self.next_reply()
            chunks = self.chunks(reply, match["model"])
            if match["method"] == "streamGenerateContent":
                return Plan(
                    headers={"content-type": "text/event-stream"},
                    frames=(_frame(c) for c in chunks),
                    reply=reply,
                    malformed=b'data: {"candidates":[{"content":\n\n',
                    error_frame=_frame(self._error_body(reply.error_status, reply.error_message)),
                )
            if match["method"] in ("embedContent", "batchEmbedContents"):
                return self.embeddings_plan(reply, match["method"], request.json or {})
            if match["method"] == "generateContent":
                plan = json_plan(self.merge(chunks))
                plan.reply = reply
                return plan
        if request.method == "GET" and re.fullmatch(r"/[^/]+/models", request.path):
            models = [
                {
                    "name": f"models/{m}",
                    "displayName": m,
                    "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
                }
                for m in self.models
            ]
            return json_plan({"models": models})
        return json_plan(self._error_body(404, "not found"), status=404)

    @staticmethod
    def _error_body(code: int, message: str) -> dict:
        return {"error": {"code": code, "message": message, "status": STATUS.get(code, "UNKNOWN")}}

    def embeddings_plan(self, reply: Reply, method: str, body: dict) -> Plan:
        """``embedContent`` -> ``{"embedding": {"values"}}``; ``batchEmbedContents`` ->
        ``{"embeddings": [{"values"}, ...]}`` (``outputDimensionality`` honoured)."""

        def values(item: dict) -> dict:
            text = " ".join(p.get("text", "") for p in (item.get("content") or {}).get("parts", []))
            dimension = item.get("outputDimensionality") or reply.extra.get("dimension") or DEFAULT_DIMENSION
            return {"values": fake_vector(text, dimension)}

        if method == "embedContent":
            plan = json_plan({"embedding": values(body)})
        else:
            plan = json_plan({"embeddings": [values(item) for item in body.get("requests", [])]})
        plan.reply = reply
        return plan

    def error_plan(self, reply: Reply) -> Plan:
        """The error body; ``reply.extra["error_details"]`` adds google.rpc details (e.g. RetryInfo)."""
        headers = {"retry-after": str(reply.retry_after)} if reply.retry_after is not None else {}
        body = self._error_body(reply.status, reply.error_message)
        if reply.extra.get("error_details"):
            body["error"]["details"] = reply.extra["error_details"]
        return json_plan(body, status=reply.status, headers=headers)

    def chunks(self, reply: Reply, model: str) -> list[dict]:
        """GenerateContentResponse objects; the last one carries finishReason and usageMetadata."""
        if reply.extra.get("block_reason"):
            return [{"promptFeedback": {"blockReason": reply.extra["block_reason"]}, "modelVersion": model}]
        parts: list[dict] = [{"text": piece} for piece in reply.pieces()]
        for call in reply.tool_calls:
            function_call: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if call.id:
                function_call["id"] = call.id
            parts.append({"functionCall": function_call})
        if not parts:
            parts.append({"text": ""})
        out = [
            {
                "candidates": [{"content": {"parts": [part], "role": "model"}, "index": 0}],
                "modelVersion": model,
            }
            for part in parts
        ]
        last = out[-1]
        last["candidates"][0]["finishReason"] = FINISH[reply.final_reason()]
        usage = reply.final_usage()
        if usage is not None:
            last["usageMetadata"] = {
                "promptTokenCount": usage[0],
                "candidatesTokenCount": usage[1],
                "totalTokenCount": sum(usage),
            }
        return out

    @staticmethod
    def merge(chunks: list[dict]) -> dict:
        """The non-streaming answer: every part in one candidate."""
        parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
        last = chunks[-1]
        candidate = {**last["candidates"][0], "content": {"parts": parts, "role": "model"}}
        return {**last, "candidates": [candidate]}


if __name__ == "__main__":
    main(FakeGemini)
