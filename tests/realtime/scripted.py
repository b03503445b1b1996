"""A scripted provider for engine tests, registered through the registry's own door.

Its behaviour comes from the agent's ``config`` (GenerationOptions.extra):
``reply`` (text), ``repeat`` (the reply that many times over: long replies without a long config),
``chunks`` (how many pieces), ``delay`` (seconds between pieces),
``fail`` (a ProviderError kind raised after ``fail_after`` pieces), ``cut`` (end without a finish),
``tool_calls`` (a list of {name, arguments} to call on the first round), ``finish`` (the finish
reason, "stop" unless given: "length" for a reply cut by the length limit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from providers.base import (
    ChatMessage,
    Finished,
    GenerationOptions,
    IncompleteStream,
    ProviderError,
    ProviderStatus,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
    UsageReport,
)

CLOSED: list[float] = []  # loop times at which a stream was closed early (cancellation reached us)
SEEN: list[list[ChatMessage]] = []  # the messages each call received


def split(text: str, pieces: int) -> list[str]:
    pieces = max(1, min(pieces, len(text) or 1))
    size, extra = divmod(len(text), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return [p for p in out if p]


class ScriptedProvider:
    name = "scripted"

    async def stream_chat(
        self,
        *,
        model: str,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec] = (),
        options: GenerationOptions,
    ) -> AsyncIterator[Any]:
        script = dict(options.extra)
        SEEN.append(list(messages))
        already_called = any(m.role == "tool" for m in messages)
        if script.get("tool_calls") and not already_called:
            for index, call in enumerate(script["tool_calls"]):
                yield ToolCall(
                    id=f"call_{len(SEEN)}_{index}", name=call["name"], arguments=call.get("arguments", {})
                )
            yield Finished(reason="tool_calls", usage=Usage(input_tokens=5, output_tokens=1))
            return
        reply = script.get("reply", "Hello from the scripted provider.") * int(script.get("repeat", 1))
        if already_called and script.get("echo_tool_result"):
            reply = "Tool said: " + next(m.content for m in reversed(messages) if m.role == "tool")
        pieces = split(reply, int(script.get("chunks", 5)))
        delay = float(script.get("delay", 0))
        try:
            for index, piece in enumerate(pieces):
                if script.get("fail") and index == int(script.get("fail_after", 0)):
                    raise ProviderError(
                        script["fail"], f"Scripted {script['fail']}.", retry_after=script.get("retry_after")
                    )
                if delay:
                    await asyncio.sleep(delay)
                yield TextDelta(text=piece)
            if script.get("fail") and int(script.get("fail_after", 0)) >= len(pieces):
                raise ProviderError(script["fail"], f"Scripted {script['fail']}.")
            if script.get("cut"):
                raise IncompleteStream("The stream ended without a finish reason.")
            usage = Usage(input_tokens=len(messages), output_tokens=len(pieces))
            yield UsageReport(usage=usage)
            yield Finished(reason=script.get("finish", "stop"), usage=usage)
        except (GeneratorExit, asyncio.CancelledError):
            CLOSED.append(asyncio.get_running_loop().time())
            raise

    async def status(self, *, options: GenerationOptions) -> ProviderStatus:
        return ProviderStatus(name=self.name, reachable=True, models=["scripted-1"])


def register() -> None:
    from providers.registry import registry

    registry.register("scripted", ScriptedProvider())
