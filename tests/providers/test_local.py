"""The in-process llama.cpp provider with the real bundled SmolLM2-135M model (CPU, ~100 tokens/s)."""

from __future__ import annotations

import asyncio
import time

import pytest

from providers.base import (
    ChatMessage,
    Finished,
    GenerationOptions,
    ProviderError,
    TextDelta,
    Usage,
    UsageReport,
)
from providers.local import _MODELS, LocalProvider, bundled_model_path
from tests.providers.helpers import Stopwatch, collect, collect_error
from tests.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

QUESTION = (ChatMessage(role="user", content="What is 2+2?"),)
STORY = (ChatMessage(role="user", content="Write a long story about a dragon who learns to cook."),)


def text_of(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


@pytest.fixture(scope="module")
def local() -> LocalProvider:
    return LocalProvider()


async def test_the_bundled_model_streams_tokens_and_finishes(local: LocalProvider) -> None:
    options = GenerationOptions(temperature=0, max_tokens=24)

    events = await collect(local.stream_chat(model="smollm2", messages=QUESTION, options=options))

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 3
    assert "4" in text_of(events)
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.reason in ("stop", "length")
    assert finished.usage.output_tokens == len(deltas)
    assert finished.usage.input_tokens > 10  # the chat template plus the question
    assert UsageReport(usage=finished.usage) in events


async def test_temperature_zero_is_deterministic(local: LocalProvider) -> None:
    options = GenerationOptions(temperature=0, max_tokens=12)

    first = text_of(await collect(local.stream_chat(model="m", messages=STORY, options=options)))
    second = text_of(await collect(local.stream_chat(model="m", messages=STORY, options=options)))

    assert first
    assert first == second


async def test_max_tokens_ends_with_length(local: LocalProvider) -> None:
    events = await collect(
        local.stream_chat(model="m", messages=STORY, options=GenerationOptions(temperature=0, max_tokens=5))
    )

    assert events[-1] == Finished(
        reason="length", usage=Usage(input_tokens=events[-1].usage.input_tokens, output_tokens=5)
    )


async def test_a_stop_mid_generation_returns_within_a_second_and_frees_the_model(
    local: LocalProvider,
) -> None:
    stream = local.stream_chat(model="m", messages=STORY, options=GenerationOptions(max_tokens=400))
    seen = 0
    async for event in stream:
        seen += isinstance(event, TextDelta)
        if seen == 3:
            break
    loaded = _MODELS[(str(local.path), local.n_ctx, local.n_threads)]
    at_close = loaded.llama.n_tokens  # the prompt and the tokens made so far
    await stream.aclose()

    # The worker thread notices the close at its next token and lets go of the model, having made
    # only a few tokens more; the wrong behaviour makes the whole 400 before the next request runs.
    await eventually(lambda: not loaded.lock.locked(), timeout=60)
    assert loaded.llama.n_tokens - at_close < 40
    events = await collect(
        local.stream_chat(
            model="m", messages=QUESTION, options=GenerationOptions(temperature=0, max_tokens=8)
        )
    )
    assert isinstance(events[-1], Finished)


async def test_the_event_loop_keeps_running_while_the_model_generates(local: LocalProvider) -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    watch = Stopwatch()
    try:
        await collect(local.stream_chat(model="m", messages=STORY, options=GenerationOptions(max_tokens=32)))
    finally:
        done.set()
        await task

    # Generation on the loop would show as one gap as long as the generation itself. The bound is
    # loose because a loaded 2-core CI machine may deschedule us for tens of milliseconds.
    assert watch.elapsed > 0.3
    assert max(gaps) < 0.25
    assert sorted(gaps)[len(gaps) // 2] < 0.02


async def test_concurrent_requests_take_turns(local: LocalProvider) -> None:
    options = GenerationOptions(temperature=0, max_tokens=16)

    results = await asyncio.gather(
        collect(local.stream_chat(model="m", messages=QUESTION, options=options)),
        collect(local.stream_chat(model="m", messages=QUESTION, options=options)),
    )

    assert text_of(results[0]) == text_of(results[1]) != ""


async def test_status_names_the_model_without_loading_it() -> None:
    status = await LocalProvider().status(options=GenerationOptions())

    assert status.reachable is True
    assert status.models == [bundled_model_path().stem] == ["SmolLM2-135M-Instruct.Q4_1"]


async def test_a_missing_model_file_is_unavailable(tmp_path) -> None:
    provider = LocalProvider(model_path=tmp_path / "absent.gguf")

    status = await provider.status(options=GenerationOptions())
    _, error = await collect_error(
        provider.stream_chat(model="m", messages=QUESTION, options=GenerationOptions())
    )

    assert status.reachable is False
    assert "absent.gguf" in status.detail
    assert isinstance(error, ProviderError)
    assert error.kind == "unavailable"
