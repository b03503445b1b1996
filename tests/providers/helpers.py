"""Helpers shared by the provider tests (fixtures live in conftest.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from providers.base import ChatMessage, GenerationOptions, ProviderError, StreamEvent, Timeouts
from providers.gemini import GeminiProvider
from providers.ollama import OllamaProvider
from providers.openai_compat import OpenAIProvider
from providers.resilience import RetryPolicy
from tests.fakes import FakeGemini, FakeOllama, FakeOpenAI, FakeServer

TEST_KEY = "test-key-8d1f0c6a2b"
HELLO = (ChatMessage(role="user", content="Say hello"),)
FAST_RETRY = {"backoff": (0.01, 0.01, 0.01)}

ADAPTERS: dict[str, tuple[type, type[FakeServer], str]] = {
    "openai": (OpenAIProvider, FakeOpenAI, "gpt-4o-mini"),
    "gemini": (GeminiProvider, FakeGemini, "gemini-2.5-flash"),
    "ollama": (OllamaProvider, FakeOllama, "llama3.2"),
}


@dataclass
class Remote:
    """One remote adapter wired to its fake server."""

    name: str
    server: FakeServer
    provider: Any
    model: str
    factory: type

    def options(self, **overrides: Any) -> GenerationOptions:
        base = GenerationOptions(base_url=self.server.base_url, api_key=TEST_KEY)
        return replace(base, **overrides)

    def with_policy(self, **policy: Any) -> Remote:
        """The same server with an adapter built with a different retry policy."""
        cap = policy.pop("retry_after_cap", None)
        provider = self.factory(retry=RetryPolicy(**policy) if policy else None, retry_after_cap=cap)
        return Remote(self.name, self.server, provider, self.model, self.factory)

    def stream(self, *, timeouts: Timeouts | None = None, **kwargs: Any) -> AsyncIterator[StreamEvent]:
        options = self.options(timeouts=timeouts) if timeouts else self.options()
        kwargs.setdefault("messages", HELLO)
        return self.provider.stream_chat(model=self.model, options=options, **kwargs)


async def collect(stream: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    """Every event of a stream that must succeed."""
    return [event async for event in stream]


async def collect_error(stream: AsyncIterator[StreamEvent]) -> tuple[list[StreamEvent], ProviderError]:
    """The events before the stream failed, and its ProviderError (fails the test if it succeeds)."""
    events: list[StreamEvent] = []
    try:
        async for event in stream:
            events.append(event)
    except ProviderError as exc:
        return events, exc
    pytest.fail(f"the stream succeeded: {events!r}")


class Stopwatch:
    """``watch = Stopwatch()`` ... ``watch.elapsed`` seconds since."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
