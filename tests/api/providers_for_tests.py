"""Small scripted providers for the API tests, registered through the registry's own door
(``registry.override``): a titler, one that fails, one that hangs, one whose status misbehaves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from providers.base import (
    ChatMessage,
    Finished,
    GenerationOptions,
    ProviderError,
    ProviderStatus,
    TextDelta,
    ToolSpec,
    Usage,
)


class Titler:
    """Answers with ``options.extra["reply"]`` in two pieces; records what it was asked."""

    name = "titler"

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def stream_chat(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        options: GenerationOptions,
    ) -> AsyncIterator[Any]:
        self.calls.append({"model": model, "messages": list(messages), "options": options})
        reply = str(options.extra.get("reply", "A title"))
        half = len(reply) // 2
        yield TextDelta(text=reply[:half])
        yield TextDelta(text=reply[half:])
        yield Finished(reason="stop", usage=Usage(input_tokens=3, output_tokens=2))

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=True, models=["titler-1", "titler-2"])


class Failing:
    name = "failing"

    async def stream_chat(self, **kwargs: Any) -> AsyncIterator[Any]:
        raise ProviderError("unavailable", "failing: the provider is down")
        yield  # pragma: no cover - makes this an async generator

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        raise RuntimeError("status() must never raise, but this one does")


class Hanging:
    name = "hanging"

    async def stream_chat(self, **kwargs: Any) -> AsyncIterator[Any]:
        await asyncio.sleep(3600)
        yield TextDelta(text="never")

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


class Cut:
    """Sends text and then stops without a finish: incomplete, never a title."""

    name = "cut"

    async def stream_chat(self, **kwargs: Any) -> AsyncIterator[Any]:
        yield TextDelta(text="Half a tit")

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=False, models=[], detail="cut: offline")
