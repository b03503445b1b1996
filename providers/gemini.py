"""Google Gemini through the official ``google-genai`` SDK, streaming.

The SDK builds the request (contents, function declarations, config), authenticates, sends it and
turns HTTP error statuses into its typed errors. The SSE reply body is parsed here with orjson: the
SDK's per-chunk path (json -> dict -> json -> pydantic) costs about 110 us a chunk. The hand-over
happens in ``_TapClient``, the httpx client we give the SDK: for our streaming calls it keeps the
successful reply for us and gives the SDK an empty one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextvars import ContextVar
from typing import Any

import httpx
import orjson
import pydantic
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from core.egress import EgressPolicy
from providers._wire import HTTP_LIMITS, PerLoop, SSEDecoder, body_chunks, egress_transport
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

NAME = "gemini"
DEFAULT_CONTEXT_WINDOW = 1_048_576  # Gemini 1.5/2.x models' window, when the agent sets none
PLACEHOLDER_KEY = "per-request"  # cached clients hold no key; the real one goes in each request's headers
GENERATED_ID_PREFIX = "gemini-call-"  # ids we make up for calls Gemini sent without one; never sent back
FINISH_REASONS: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "blocked",
    "RECITATION": "blocked",
    "BLOCKLIST": "blocked",
    "PROHIBITED_CONTENT": "blocked",
    "SPII": "blocked",
    "IMAGE_SAFETY": "blocked",
}
_DURATION = re.compile(r"^\s*([0-9.]+)s\s*$")


def to_gemini_contents(messages: Sequence[ChatMessage]) -> tuple[str | None, list[types.Content]]:
    """(system instruction, contents). Tool results become ``functionResponse`` parts of a user turn."""
    system = [m.content for m in messages if m.role == "system" and m.content]
    names = {call.id: call.name for m in messages for call in m.tool_calls}
    contents: list[types.Content] = []
    for message in messages:
        if message.role == "system":
            continue
        parts: list[types.Part] = []
        if message.role == "tool":
            role = "user"
            name = message.name or names.get(message.tool_call_id or "")
            if not name:
                raise ProviderError(
                    "bad_request", f"{NAME}: a tool result needs the tool's name", provider=NAME
                )
            call_id = message.tool_call_id
            parts.append(
                types.Part(
                    function_response=types.FunctionResponse(
                        name=name,
                        response=_tool_result(message.content),
                        id=None if not call_id or call_id.startswith(GENERATED_ID_PREFIX) else call_id,
                    )
                )
            )
        else:
            role = "model" if message.role == "assistant" else "user"
            if message.content:
                parts.append(types.Part(text=message.content))
            for call in message.tool_calls:
                call_id = None if call.id.startswith(GENERATED_ID_PREFIX) else call.id
                parts.append(
                    types.Part(
                        function_call=types.FunctionCall(name=call.name, args=call.arguments, id=call_id)
                    )
                )
        if not parts:
            continue
        if contents and contents[-1].role == role:
            # Gemini wants turns to alternate; parallel tool results share one user turn.
            contents[-1].parts = [*(contents[-1].parts or []), *parts]
        else:
            contents.append(types.Content(role=role, parts=parts))
    return ("\n\n".join(system) or None), contents


def _tool_result(content: str) -> dict[str, Any]:
    """Gemini's function response is an object: a JSON object result as is, anything else wrapped."""
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return {"result": content}
    return value if isinstance(value, dict) else {"result": value}


def to_gemini_tools(tools: Sequence[ToolSpec]) -> list[types.Tool]:
    if not tools:
        return []
    declarations = [
        types.FunctionDeclaration(name=t.name, description=t.description, parameters_json_schema=t.parameters)
        for t in tools
    ]
    return [types.Tool(function_declarations=declarations)]


class _Tap:
    __slots__ = ("response", "timeout")

    def __init__(self, timeout: httpx.Timeout) -> None:
        self.timeout = timeout
        self.response: httpx.Response | None = None


_TAP: ContextVar[_Tap | None] = ContextVar("providers_gemini_tap", default=None)


class _TapClient(httpx.AsyncClient):
    """The httpx client the SDK sends through.

    Outside our streaming calls it is a plain client. Inside one (``_TAP`` set) it applies our
    timeouts, and on a 200 keeps the streaming reply for the adapter and returns an empty reply to the
    SDK, whose stream then ends having parsed nothing. Error statuses go to the SDK untouched.
    """

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        tap = _TAP.get()
        if tap is None or not kwargs.get("stream"):
            return await super().send(request, **kwargs)
        request.extensions["timeout"] = tap.timeout.as_dict()
        response = await super().send(request, **kwargs)
        if response.status_code != 200:
            return response
        tap.response = response
        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, content=b"", request=request
        )


class _LoopClients:
    """This loop's SDK clients, one per (base URL, API version), and the HTTP clients under them."""

    def __init__(self) -> None:
        self.sdk: dict[tuple[str, str], genai.Client] = {}
        self.http: list[_TapClient] = []

    async def close(self) -> None:
        for client in self.http:
            await client.aclose()


def _retry_delay(error: genai_errors.APIError) -> float | None:
    """Retry-After header, else google.rpc.RetryInfo's ``retryDelay`` ("30s") in the error details."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    delay = parse_retry_after(headers) if headers is not None else None
    if delay is not None:
        return delay
    details = error.details.get("error", error.details) if isinstance(error.details, dict) else {}
    for item in (details.get("details") or []) if isinstance(details, dict) else []:
        if isinstance(item, dict) and str(item.get("@type", "")).endswith("RetryInfo"):
            match = _DURATION.match(str(item.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


class _ChunkReader:
    """Turns GenerateContentResponse chunks into events; function calls arrive whole."""

    __slots__ = ("called", "finish", "usage")

    def __init__(self) -> None:
        self.called = False
        self.finish: str | None = None
        self.usage: Usage | None = None

    def read(self, data: bytes, events: list[StreamEvent]) -> None:
        """Parse one SSE data payload, appending its events to ``events``."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ProviderError(
                "protocol", f"{NAME}: the provider sent a malformed chunk", provider=NAME
            ) from None
        if not isinstance(chunk, dict):
            raise ProviderError("protocol", f"{NAME}: the provider sent a malformed chunk", provider=NAME)
        if "error" in chunk:
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
            code = error.get("code") if isinstance(error.get("code"), int) else None
            raise in_stream_error(error.get("message"), provider=NAME, status=code)
        metadata = chunk.get("usageMetadata")
        if metadata:
            output = (metadata.get("candidatesTokenCount") or 0) + (metadata.get("thoughtsTokenCount") or 0)
            self.usage = Usage(input_tokens=metadata.get("promptTokenCount") or 0, output_tokens=output)
        candidates = chunk.get("candidates") or ()
        if not candidates:
            blocked = (chunk.get("promptFeedback") or {}).get("blockReason")
            if blocked:
                raise ProviderError("blocked", f"{NAME}: the prompt was blocked ({blocked})", provider=NAME)
            return
        candidate = candidates[0]
        for part in (candidate.get("content") or {}).get("parts") or ():
            text = part.get("text")
            if text and not part.get("thought"):
                events.append(TextDelta(text=text))
            call = part.get("functionCall")
            if call:
                events.append(self._tool_call(call))
        reason = candidate.get("finishReason")
        if reason and reason != "FINISH_REASON_UNSPECIFIED":
            if reason == "MALFORMED_FUNCTION_CALL":
                raise ProviderError(
                    "protocol", f"{NAME}: the model produced a malformed function call", provider=NAME
                )
            self.finish = reason

    def _tool_call(self, call: dict[str, Any]) -> ToolCall:
        name = call.get("name")
        arguments = call.get("args") or {}
        if not name or not isinstance(arguments, dict):
            raise ProviderError(
                "protocol", f"{NAME}: the provider sent a malformed function call", provider=NAME
            )
        self.called = True
        return ToolCall(
            id=call.get("id") or f"{GENERATED_ID_PREFIX}{uuid.uuid4().hex[:16]}",
            name=name,
            arguments=arguments,
        )

    def ending(self) -> list[StreamEvent]:
        """UsageReport (when known) and Finished, once the body has ended."""
        if self.finish is None:
            raise IncompleteStream(f"{NAME}: the stream ended without a finish reason", provider=NAME)
        reason = FINISH_REASONS.get(self.finish, "stop")
        if self.called and reason == "stop":
            reason = "tool_calls"
        usage = self.usage or Usage()
        events: list[StreamEvent] = [UsageReport(usage=usage)] if self.usage else []
        events.append(Finished(reason=reason, usage=usage))
        return events


class GeminiProvider:
    """Gemini API (``generativelanguage.googleapis.com`` or any server speaking it)."""

    name = NAME

    def __init__(
        self,
        *,
        base_url: str = "https://generativelanguage.googleapis.com",
        api_version: str = "v1beta",
        retry: RetryPolicy | None = None,
        retry_after_cap: float | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.base_url = base_url
        self.api_version = api_version
        self.retry = retry_policy(retry, retry_after_cap)
        self.egress = egress
        self._clients = PerLoop(_LoopClients, close=_LoopClients.close)

    def _client(self, options: GenerationOptions) -> genai.Client:
        # A genai.Client costs ~40 ms to build, so one per (loop, base URL, version), holding no key.
        base_url = options.base_url or self.base_url
        api_version = options.api_version or self.api_version
        clients = self._clients.get()
        client = clients.sdk.get((base_url, api_version))
        if client is None:
            http = _TapClient(
                trust_env=False,
                timeout=httpx.Timeout(30.0),
                limits=HTTP_LIMITS,
                transport=egress_transport(self.egress),
            )
            clients.http.append(http)
            client = clients.sdk[(base_url, api_version)] = genai.Client(
                api_key=PLACEHOLDER_KEY,
                vertexai=False,
                http_options=types.HttpOptions(
                    base_url=base_url,
                    api_version=api_version,
                    retry_options=types.HttpRetryOptions(attempts=1),  # ours is the only retry layer
                    httpx_async_client=http,
                ),
            )
        return client

    @staticmethod
    def _request_options(options: GenerationOptions, timeout_s: float | None = None) -> types.HttpOptions:
        headers = {"x-goog-api-key": options.api_key or ""}
        timeout = int(timeout_s * 1000) if timeout_s else None
        return types.HttpOptions(headers=headers, timeout=timeout)

    def _config(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], options: GenerationOptions
    ) -> tuple[list[types.Content], types.GenerateContentConfig]:
        system, contents = to_gemini_contents(messages)
        config: dict[str, Any] = {
            "system_instruction": system,
            "tools": to_gemini_tools(tools) or None,
            "temperature": options.temperature,
            "max_output_tokens": options.max_tokens,
            # We relay calls to the run engine and resume nothing behind the caller's back.
            "automatic_function_calling": types.AutomaticFunctionCallingConfig(disable=True),
            "automatic_continuation": False,
            "http_options": self._request_options(options),
            **dict(options.extra),  # e.g. safety_settings, top_p, thinking_config
        }
        try:
            return contents, types.GenerateContentConfig(**config)
        except pydantic.ValidationError as exc:
            raise ProviderError(
                "bad_request", f"{NAME}: invalid generation settings ({exc.error_count()} errors)"
            ) from exc

    def token_counter(
        self, *, model: str, options: GenerationOptions, window: int | None = None
    ) -> EstimatedTokens:
        """The character estimate (no tokenizer here); the window is the agent's, else
        ``DEFAULT_CONTEXT_WINDOW``."""
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

        def map_error(exc: BaseException, watch: StreamWatch) -> ProviderError | None:
            return _map_error(exc, options)

        return resilient_stream(
            attempt, provider=NAME, timeouts=options.timeouts, policy=self.retry, map_error=map_error
        )

    async def _attempt(
        self,
        watch: StreamWatch,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        options: GenerationOptions,
    ) -> AsyncGenerator[list[StreamEvent], None]:
        contents, config = self._config(messages, tools, options)
        client = self._client(options)
        tap = _Tap(httpx_timeout(options.timeouts))
        try:
            token = _TAP.set(tap)
            try:
                # Sends the request; on a 200 the SDK sees an empty body and ends without a chunk.
                sdk_stream = await client.aio.models.generate_content_stream(
                    model=model, contents=contents, config=config
                )
                try:
                    async for _ in sdk_stream:
                        raise ProviderError(
                            "protocol", f"{NAME}: the SDK read a chunk meant for us", provider=NAME
                        )
                finally:
                    # typed AsyncIterator by the SDK; it is an async generator
                    await sdk_stream.aclose()  # type: ignore[attr-defined]
            finally:
                _TAP.reset(token)
            if tap.response is None:
                raise ProviderError("protocol", f"{NAME}: no reply body to read", provider=NAME)
            reader = _ChunkReader()
            decoder = SSEDecoder()
            async for raw in body_chunks(tap.response):
                watch.tick()
                batch: list[StreamEvent] = []
                error: ProviderError | None = None
                try:
                    for data in decoder.feed(raw):
                        reader.read(data, batch)
                except ProviderError as exc:
                    error = exc
                if batch:
                    yield batch  # what arrived before a failure is still delivered
                if error is not None:
                    raise error
            batch = []
            for data in decoder.close():
                reader.read(data, batch)
            if batch:
                yield batch
        finally:
            if tap.response is not None:
                await tap.response.aclose()
        # Gemini has no end marker: the body ends after the chunk that carries finishReason.
        yield reader.ending()

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        """Reachable and the model names from ``GET /{version}/models``; never raises."""
        timeouts = options.timeouts
        try:
            client = self._client(options)
            config = types.ListModelsConfig(
                http_options=self._request_options(options, min(timeouts.connect * 2, timeouts.total))
            )
            pager = await client.aio.models.list(config=config)
            models = sorted((m.name or "").removeprefix("models/") for m in pager.page)
        except Exception as exc:
            error = _map_error(exc, options) or transport_error(exc, started=False, provider=NAME)
            detail = error.message if error else f"{NAME}: unexpected answer from the model list"
            public = error.public_message if error else None
            return ProviderStatus(name=NAME, reachable=False, models=[], detail=detail, public_detail=public)
        return ProviderStatus(name=NAME, reachable=True, models=models)


def _map_error(exc: BaseException, options: GenerationOptions) -> ProviderError | None:
    if isinstance(exc, genai_errors.UnknownApiResponseError):
        return ProviderError("protocol", f"{NAME}: the provider sent a malformed reply", provider=NAME)
    if isinstance(exc, genai_errors.APIError):
        status = exc.code if isinstance(exc.code, int) else 500
        detail = safe_message(exc.message or exc.status or "", secrets=[options.api_key])
        return status_error(status, detail, provider=NAME, retry_after=_retry_delay(exc))
    if isinstance(exc, pydantic.ValidationError | ValueError):
        return ProviderError(
            "bad_request", f"{NAME}: invalid request: {safe_message(exc)[:160]}", provider=NAME
        )
    return None
