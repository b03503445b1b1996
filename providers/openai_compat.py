"""OpenAI Chat Completions, and every server that speaks it (Groq, vLLM, llama.cpp, LM Studio, OpenRouter).

The official ``openai`` SDK sends the request, authenticates and maps HTTP errors. The request goes
through the SDK's generic ``post`` with the body built here (plain JSON: ``create`` would walk it
against the SDK's TypedDicts first, about 0.5 ms on the path to the first token, and changes nothing
in a chat request), and the reply body is read raw and parsed here with orjson: the SDK's per-chunk
pydantic parsing costs about 110 us a chunk, which would cap the realtime relay.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import httpx
import openai
import orjson

from core.egress import EgressPolicy
from providers._wire import PerLoop, SSEDecoder, body_chunks, close_http_client, finish_body, new_http_client
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

NAME = "openai"
DEFAULT_CONTEXT_WINDOW = 128_000  # OpenAI's current chat models' window, when the agent sets none
PLACEHOLDER_KEY = "not-needed"  # local OpenAI-compatible servers want no key, the SDK insists on one
MAX_SDK_CLIENTS = 64  # per event loop
FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "blocked",
}


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Our messages in Chat Completions form; tool results go back as role=tool with tool_call_id."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "tool":
            out.append(
                {"role": "tool", "tool_call_id": message.tool_call_id or "", "content": message.content}
            )
        elif message.role == "assistant" and message.tool_calls:
            out.append(
                {
                    "role": "assistant",
                    "content": message.content or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {
                                "name": call.name,
                                "arguments": orjson.dumps(call.arguments).decode(),
                            },
                        }
                        for call in message.tool_calls
                    ],
                }
            )
        else:
            out.append({"role": message.role, "content": message.content})
    return out


def to_openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
        }
        for t in tools
    ]


def _in_stream_error(error: Any) -> ProviderError:
    """``data: {"error": {...}}`` sent after the stream started."""
    if not isinstance(error, dict):
        error = {"message": str(error)}
    code = error.get("code")
    status = int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else None
    kind = "rate_limited" if "rate_limit" in str(error.get("type", "")) else None
    return in_stream_error(error.get("message"), provider=NAME, status=status, kind=kind)


class _ChunkReader:
    """Turns Chat Completions chunks into events.

    Tool calls are assembled by ``index``: id and name come from the first delta that has them (llama.cpp
    repeats both in every delta, so they must never be concatenated), only ``arguments`` are joined.
    """

    __slots__ = ("calls", "finish", "usage")

    def __init__(self) -> None:
        self.calls: dict[int, list[str]] = {}  # index -> [id, name, arguments...]
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
        if chunk.get("error"):
            raise _in_stream_error(chunk["error"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # n > 1 is not supported; only the first choice is relayed
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if content:
                events.append(TextDelta(text=content))
            for call in delta.get("tool_calls") or ():
                self._add_call_delta(call)
            reason = choice.get("finish_reason")
            if reason and self.finish is None:
                self.finish = reason
                events.extend(self._whole_calls())
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage(
                input_tokens=usage.get("prompt_tokens") or 0,
                output_tokens=usage.get("completion_tokens") or 0,
            )
            events.append(UsageReport(usage=self.usage))

    def _add_call_delta(self, call: dict[str, Any]) -> None:
        index = call.get("index")
        if index is None:  # servers that omit index: a new id starts a new call
            last = max(self.calls, default=-1)
            same = last >= 0 and (call.get("id") in (None, self.calls[last][0]))
            index = last if same else last + 1
        function = call.get("function") or {}
        slot = self.calls.get(index)
        if slot is None:
            slot = self.calls[index] = [call.get("id") or "", function.get("name") or ""]
        else:
            if not slot[0] and call.get("id"):
                slot[0] = call["id"]
            if not slot[1] and function.get("name"):
                slot[1] = function["name"]
        arguments = function.get("arguments")
        if arguments:
            slot.append(arguments)

    def _whole_calls(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for index in sorted(self.calls):
            call_id, name, *pieces = self.calls[index]
            text = "".join(pieces).strip()
            try:
                arguments = orjson.loads(text) if text else {}
            except orjson.JSONDecodeError:
                raise ProviderError(
                    "protocol", f"{NAME}: tool call {name!r} has arguments that are not JSON", provider=NAME
                ) from None
            if not isinstance(arguments, dict):
                raise ProviderError(
                    "protocol", f"{NAME}: tool call {name!r} arguments are not an object", provider=NAME
                )
            if not name:
                raise ProviderError("protocol", f"{NAME}: a tool call arrived without a name", provider=NAME)
            events.append(
                ToolCall(id=call_id or f"call_{uuid.uuid4().hex[:24]}", name=name, arguments=arguments)
            )
        self.calls.clear()
        return events

    def finished(self) -> Finished:
        if self.finish is None:
            raise IncompleteStream(f"{NAME}: the stream ended without a finish reason", provider=NAME)
        reason = FINISH_REASONS.get(self.finish, "stop")
        return Finished(reason=reason, usage=self.usage or Usage())


class OpenAIProvider:
    """Chat Completions over the official SDK; ``base_url`` per call makes it any compatible server."""

    name = NAME

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        retry: RetryPolicy | None = None,
        retry_after_cap: float | None = None,
        include_usage: bool = True,
        egress: EgressPolicy | None = None,
    ) -> None:
        self.base_url = base_url
        self.retry = retry_policy(retry, retry_after_cap)
        self.include_usage = include_usage
        self.egress = egress
        self._http = PerLoop(lambda: new_http_client(egress), close=close_http_client)
        self._clients: PerLoop[dict[tuple[str, str], openai.AsyncOpenAI]] = PerLoop(dict)

    def _client(self, options: GenerationOptions) -> openai.AsyncOpenAI:
        """The SDK client for this loop, base URL and key, kept (making one costs about 0.2 ms, on
        the path to the first token); all share the loop's HTTP client and its connections."""
        api_key = options.api_key or PLACEHOLDER_KEY
        base_url = options.base_url or self.base_url
        clients = self._clients.get()
        client = clients.get((base_url, api_key))
        if client is None:
            if len(clients) >= MAX_SDK_CLIENTS:
                clients.clear()  # keys rotate and agents change: never an unbounded map
            client = clients[(base_url, api_key)] = openai.AsyncOpenAI(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,  # ours is the only retry layer
                # the SDK's annotations name httpx2's client; at run time it takes httpx's
                http_client=self._http.get(),  # type: ignore[arg-type]
            )
        return client

    def token_counter(
        self, *, model: str, options: GenerationOptions, window: int | None = None
    ) -> EstimatedTokens:
        """The character estimate (no tokenizer here); the window is the agent's, else
        ``DEFAULT_CONTEXT_WINDOW`` (set the agent's for a smaller model or server)."""
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
            return self._map_error(exc, watch, options)

        return resilient_stream(
            attempt, provider=NAME, timeouts=options.timeouts, policy=self.retry, map_error=map_error
        )

    def _request(
        self,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        options: GenerationOptions,
    ) -> dict[str, Any]:
        extra = dict(options.extra)
        request: dict[str, Any] = {"model": model, "messages": to_openai_messages(messages), "stream": True}
        if extra.pop("include_usage", self.include_usage):
            request["stream_options"] = {"include_usage": True}
        if tools:
            request["tools"] = to_openai_tools(tools)
        if options.temperature is not None:
            request["temperature"] = options.temperature
        if options.max_tokens is not None:
            # Newer OpenAI models want max_completion_tokens; compatible servers know max_tokens.
            request[extra.pop("max_tokens_param", "max_tokens")] = options.max_tokens
        return {**request, **extra}  # e.g. top_p, seed, tool_choice: sent as given

    async def _attempt(
        self,
        watch: StreamWatch,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        options: GenerationOptions,
    ) -> AsyncGenerator[list[StreamEvent], None]:
        client = self._client(options)
        body = self._request(model, messages, tools, options)
        reader = _ChunkReader()
        decoder = SSEDecoder()
        done = False
        # cast_to=httpx.Response: the SDK's overloads name httpx2's Response (run time: httpx's)
        response = await client.post(  # type: ignore[call-overload]
            "/chat/completions",
            cast_to=httpx.Response,
            body=body,
            stream=True,
            options={"timeout": httpx_timeout(options.timeouts)},
        )
        try:
            chunks = body_chunks(response)
            async for raw in chunks:
                watch.tick()
                batch: list[StreamEvent] = []
                error: ProviderError | None = None
                try:
                    for data in decoder.feed(raw):
                        if data == b"[DONE]":
                            done = True
                            break
                        reader.read(data, batch)
                except ProviderError as exc:
                    error = exc
                if done:
                    await finish_body(chunks)
                if batch:
                    yield batch  # what arrived before a failure is still delivered
                if error is not None:
                    raise error
                if done:
                    break
            if not done:
                batch = []
                for data in decoder.close():
                    if data != b"[DONE]":
                        reader.read(data, batch)
                if batch:
                    yield batch
        finally:
            await response.aclose()
        # A finish reason without [DONE] still counts; [DONE] without a finish reason does not.
        yield [reader.finished()]

    def _map_error(
        self, exc: BaseException, watch: StreamWatch | _NoWatch, options: GenerationOptions
    ) -> ProviderError | None:
        if isinstance(exc, openai.APIStatusError):
            body = exc.body
            detail = body.get("message") if isinstance(body, dict) else None
            if isinstance(body, dict) and isinstance(body.get("error"), dict):
                detail = body["error"].get("message")
            text = safe_message(detail or exc.message, secrets=[options.api_key])
            return status_error(
                exc.status_code,
                text,
                provider=NAME,
                # the SDK's annotations say httpx2's Headers; at run time they are httpx's
                retry_after=parse_retry_after(exc.response.headers),  # type: ignore[arg-type]
            )
        if isinstance(exc, openai.APITimeoutError):
            return ProviderError("timeout", f"{NAME}: the provider did not answer in time", provider=NAME)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__
            mapped = transport_error(cause, started=watch.started, provider=NAME) if cause else None
            return mapped or ProviderError(
                "unavailable", f"{NAME}: could not connect to the provider", provider=NAME
            )
        if isinstance(exc, openai.APIError):
            return ProviderError(
                "protocol",
                f"{NAME}: {safe_message(exc.message)}",
                provider=NAME,
                public_message=f"{NAME}: the provider sent an unexpected answer",
            )
        if isinstance(exc, openai.OpenAIError):
            return ProviderError("bad_request", f"{NAME}: {safe_message(exc)}", provider=NAME)
        return None

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        """Reachable and the model ids from ``GET /models``; never raises."""
        client = self._client(options)
        timeouts = options.timeouts
        try:
            page = await client.models.list(timeout=min(timeouts.connect * 2, timeouts.total))
            models = sorted(m.id for m in page.data)
        except Exception as exc:
            error = self._map_error(exc, _NO_WATCH, options) or transport_error(
                exc, started=False, provider=NAME
            )
            detail = error.message if error else f"{NAME}: unexpected error"
            public = error.public_message if error else None
            return ProviderStatus(name=NAME, reachable=False, models=[], detail=detail, public_detail=public)
        return ProviderStatus(name=NAME, reachable=True, models=models)


class _NoWatch:
    started = False


_NO_WATCH = _NoWatch()
