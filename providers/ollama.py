"""Ollama's native chat API: ``POST /api/chat`` streaming NDJSON, models from ``GET /api/tags``.

There is no official async client in our dependencies, so this is httpx plus orjson, which is also
what the ``ollama`` package does underneath.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import orjson

from core.egress import EgressPolicy
from providers._wire import LineDecoder, PerLoop, body_chunks, close_http_client, finish_body, new_http_client
from providers.base import (
    ChatMessage,
    Finished,
    FinishReason,
    GenerationOptions,
    IncompleteStream,
    ProviderError,
    ProviderStatus,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
    UsageReport,
    safe_message,
)
from providers.resilience import (
    RetryPolicy,
    StreamWatch,
    httpx_timeout,
    in_stream_error,
    parse_retry_after,
    resilient_stream,
    retry_policy,
    status_error,
    transport_error,
)
from providers.tokens import EstimatedTokens

NAME = "ollama"
DEFAULT_CONTEXT_WINDOW = 4096  # Ollama's default num_ctx, when the agent sets none


def to_ollama_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Our messages in Ollama's form; tool results go back as role=tool with ``tool_name``."""
    out: list[dict[str, Any]] = []
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    for message in messages:
        item: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            item["tool_calls"] = [
                {"function": {"name": call.name, "arguments": call.arguments}} for call in message.tool_calls
            ]
        if message.role == "tool":
            name = message.name or names.get(message.tool_call_id or "")
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def to_ollama_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def _malformed() -> ProviderError:
    return ProviderError("protocol", f"{NAME}: the provider sent a malformed chunk", provider=NAME)


class _LineReader:
    """Turns ``/api/chat`` NDJSON objects into events. Tool calls arrive whole (arguments as an object)."""

    __slots__ = ("called", "finish")

    def __init__(self) -> None:
        self.called = False
        self.finish: Finished | None = None

    def read(self, line: bytes, events: list[StreamEvent]) -> None:
        """Parse one NDJSON line, appending its events to ``events``."""
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise _malformed() from None
        if not isinstance(data, dict):
            raise _malformed()
        if data.get("error"):
            # An error inside the stream has no status; the server gave up on the generation.
            raise in_stream_error(data["error"], provider=NAME)
        message = data.get("message") or {}
        content = message.get("content")
        if content:
            events.append(TextDelta(text=content))
        for call in message.get("tool_calls") or ():
            events.append(self._tool_call(call))
        if data.get("done"):
            usage = Usage(
                input_tokens=data.get("prompt_eval_count") or 0, output_tokens=data.get("eval_count") or 0
            )
            reason: FinishReason = "length" if data.get("done_reason") == "length" else "stop"
            if self.called and reason == "stop":
                reason = "tool_calls"
            if usage.total_tokens:
                events.append(UsageReport(usage=usage))
            self.finish = Finished(reason=reason, usage=usage)
            events.append(self.finish)

    def _tool_call(self, call: dict[str, Any]) -> ToolCall:
        function = call.get("function") or {}
        name = function.get("name")
        arguments = function.get("arguments") or {}
        if isinstance(arguments, str):  # some servers send a JSON string like OpenAI does
            try:
                arguments = orjson.loads(arguments) if arguments.strip() else {}
            except orjson.JSONDecodeError:
                raise ProviderError(
                    "protocol", f"{NAME}: tool call {name!r} has arguments that are not JSON", provider=NAME
                ) from None
        if not name or not isinstance(arguments, dict):
            raise ProviderError("protocol", f"{NAME}: the provider sent a malformed tool call", provider=NAME)
        self.called = True
        # Older servers send no id; the run engine needs one to pair the result with the call.
        return ToolCall(id=call.get("id") or f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=arguments)


class OllamaProvider:
    """Ollama over its native API."""

    name = NAME

    def __init__(
        self,
        *,
        base_url: str = "http://localhost:11434",
        retry: RetryPolicy | None = None,
        retry_after_cap: float | None = None,
        keep_alive: str | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry_policy(retry, retry_after_cap)
        self.keep_alive = keep_alive
        self.egress = egress
        self._http = PerLoop(lambda: new_http_client(egress), close=close_http_client)

    def _url(self, options: GenerationOptions, path: str) -> str:
        return (options.base_url or self.base_url).rstrip("/") + path

    @staticmethod
    def _headers(options: GenerationOptions) -> dict[str, str]:
        # Ollama needs no key; one behind a proxy or ollama.com takes a bearer token.
        return {"authorization": f"Bearer {options.api_key}"} if options.api_key else {}

    def _body(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        options: GenerationOptions,
    ) -> dict[str, Any]:
        extra = dict(options.extra)
        model_options: dict[str, Any] = dict(extra.pop("options", {}) or {})
        if options.temperature is not None:
            model_options["temperature"] = options.temperature
        if options.max_tokens is not None:
            model_options["num_predict"] = options.max_tokens
        body: dict[str, Any] = {"model": model, "messages": to_ollama_messages(messages), "stream": True}
        if tools:
            body["tools"] = to_ollama_tools(tools)
        if model_options:
            body["options"] = model_options
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        body.update(extra)  # e.g. think, format
        return body

    def token_counter(
        self, *, model: str, options: GenerationOptions, window: int | None = None
    ) -> EstimatedTokens:
        """The character estimate (no tokenizer here). The window: the agent's, else the
        ``num_ctx`` it passes in ``options``, else ``DEFAULT_CONTEXT_WINDOW`` (Ollama's default
        context; Ollama cuts a longer prompt silently)."""
        num_ctx = (options.extra.get("options") or {}).get("num_ctx")
        if not window and isinstance(num_ctx, int) and num_ctx > 0:
            window = num_ctx
        return EstimatedTokens(window=window or DEFAULT_CONTEXT_WINDOW)

    def stream_chat(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        options: GenerationOptions,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Yield TextDelta/ToolCall/UsageReport, then exactly one Finished; raise ProviderError."""

        def attempt(watch: StreamWatch) -> AsyncGenerator[list[StreamEvent], None]:
            return self._attempt(watch, model=model, messages=messages, tools=tools, options=options)

        return resilient_stream(attempt, provider=NAME, timeouts=options.timeouts, policy=self.retry)

    async def _attempt(
        self,
        watch: StreamWatch,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        options: GenerationOptions,
    ) -> AsyncGenerator[list[StreamEvent], None]:
        body = orjson.dumps(self._body(model, messages, tools, options))
        headers = {"content-type": "application/json", **self._headers(options)}
        client = self._http.get()
        request = client.build_request(
            "POST",
            self._url(options, "/api/chat"),
            content=body,
            headers=headers,
            timeout=httpx_timeout(options.timeouts),
        )
        response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                raise await self._status_error(response, options)
            reader = _LineReader()
            decoder = LineDecoder()
            chunks = body_chunks(response)
            async for raw in chunks:
                watch.tick()
                batch: list[StreamEvent] = []
                error: ProviderError | None = None
                try:
                    for line in decoder.feed(raw):
                        reader.read(line, batch)
                        if reader.finish is not None:
                            break
                except ProviderError as exc:
                    error = exc
                if reader.finish is not None:
                    await finish_body(chunks)
                if batch:
                    yield batch  # what arrived before a failure is still delivered
                if error is not None:
                    raise error
                if reader.finish is not None:
                    return
            batch = []
            for line in decoder.close():
                reader.read(line, batch)
            if batch:
                yield batch
            if reader.finish is None:
                raise IncompleteStream(f"{NAME}: the stream ended without a finish reason", provider=NAME)
        finally:
            await response.aclose()

    @staticmethod
    async def _status_error(response: httpx.Response, options: GenerationOptions) -> ProviderError:
        await response.aread()
        try:
            detail = orjson.loads(response.content).get("error", "")
        except (orjson.JSONDecodeError, AttributeError):
            detail = response.text[:200]
        return status_error(
            response.status_code,
            safe_message(detail, secrets=[options.api_key]),
            provider=NAME,
            retry_after=parse_retry_after(response.headers),
        )

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        """Reachable and the local model names from ``GET /api/tags``; never raises."""
        timeouts = options.timeouts
        try:
            response = await self._http.get().get(
                self._url(options, "/api/tags"),
                headers=self._headers(options),
                timeout=min(timeouts.connect * 2, timeouts.total),
            )
            if response.status_code >= 400:
                raise await self._status_error(response, options)
            models = sorted(m.get("name") or m.get("model") for m in response.json().get("models", []))
        except ProviderError as exc:
            return ProviderStatus(
                name=NAME, reachable=False, models=[], detail=exc.message, public_detail=exc.public_message
            )
        except Exception as exc:
            error = transport_error(exc, started=False, provider=NAME)
            detail = error.message if error else f"{NAME}: unexpected answer from /api/tags"
            public = error.public_message if error else None
            return ProviderStatus(name=NAME, reachable=False, models=[], detail=detail, public_detail=public)
        return ProviderStatus(name=NAME, reachable=True, models=models)
