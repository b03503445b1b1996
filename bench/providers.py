"""Provider adapters against the naive SDK loops: tokens/s and time to first token.

Run: ``.venv/bin/python bench/providers.py [--chunks 2000] [--runs 5] [--skip-local]``

Each remote adapter streams the same unpaced fake reply (one token per SSE event / NDJSON line) from
a fake server in a subprocess (so the server does not share our GIL), first through our adapter,
then through the provider's SDK used the plain way:

- openai: ``async for chunk in await client.chat.completions.create(stream=True)``;
- gemini: ``async for chunk in await client.aio.models.generate_content_stream(...)``;
- ollama: no official async client is installed, so httpx ``aiter_lines()`` + ``json.loads``.

Runs alternate between the two so machine load hits both alike; medians are printed. The local
model (llama.cpp, bundled SmolLM2-135M) reports its own tokens/s and time to first token.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

# Run as a script, bench/ is first on sys.path and this file would shadow the `providers` package.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import openai  # noqa: E402
from google import genai  # noqa: E402
from google.genai import types  # noqa: E402

from providers.base import ChatMessage, GenerationOptions, TextDelta  # noqa: E402
from providers.gemini import GeminiProvider  # noqa: E402
from providers.local import LocalProvider  # noqa: E402
from providers.ollama import OllamaProvider  # noqa: E402
from providers.openai_compat import OpenAIProvider  # noqa: E402
from tests.fakes import FakeServerProcess, Reply  # noqa: E402

MESSAGES = [ChatMessage(role="user", content="Say many words.")]
MODELS = {"openai": "gpt-4o-mini", "gemini": "gemini-2.5-flash", "ollama": "llama3.2"}


@dataclass
class Sample:
    tokens: int
    ttft: float
    total: float

    @property
    def rate(self) -> float:
        return self.tokens / self.total


async def measure(texts: Callable[[], AsyncIterator[str]]) -> Sample:
    """Time one stream: ``texts`` yields each text piece as it arrives."""
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async for text in texts():
        if not text:
            continue
        if tokens == 0:
            ttft = time.perf_counter() - started
        tokens += 1
    return Sample(tokens=tokens, ttft=ttft, total=time.perf_counter() - started)


def adapter_texts(provider, model: str, options: GenerationOptions) -> Callable[[], AsyncIterator[str]]:
    async def texts() -> AsyncIterator[str]:
        async for event in provider.stream_chat(model=model, messages=MESSAGES, options=options):
            if isinstance(event, TextDelta):
                yield event.text

    return texts


def naive_openai(base_url: str) -> Callable[[], AsyncIterator[str]]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)

    async def texts() -> AsyncIterator[str]:
        stream = await client.chat.completions.create(
            model=MODELS["openai"],
            messages=[{"role": "user", "content": "Say many words."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content

    return texts


def naive_gemini(base_url: str) -> Callable[[], AsyncIterator[str]]:
    client = genai.Client(
        api_key="bench",
        http_options=types.HttpOptions(
            base_url=base_url, api_version="v1beta", retry_options=types.HttpRetryOptions(attempts=1)
        ),
    )

    async def texts() -> AsyncIterator[str]:
        stream = await client.aio.models.generate_content_stream(
            model=MODELS["gemini"], contents="Say many words."
        )
        async for chunk in stream:
            yield chunk.text or ""

    return texts


def naive_ollama(base_url: str) -> Callable[[], AsyncIterator[str]]:
    client = httpx.AsyncClient(timeout=30)
    body = {
        "model": MODELS["ollama"],
        "messages": [{"role": "user", "content": "Say many words."}],
        "stream": True,
    }

    async def texts() -> AsyncIterator[str]:
        async with client.stream("POST", f"{base_url}/api/chat", json=body) as response:
            async for line in response.aiter_lines():
                if line:
                    yield json.loads(line).get("message", {}).get("content", "")

    return texts


ADAPTERS = {"openai": OpenAIProvider, "gemini": GeminiProvider, "ollama": OllamaProvider}
NAIVE = {"openai": naive_openai, "gemini": naive_gemini, "ollama": naive_ollama}


async def bench_remote(dialect: str, *, chunks: int, runs: int) -> dict[str, float]:
    with FakeServerProcess(dialect) as fake:
        fake.script(default=Reply.words(chunks, usage=(10, chunks)))
        options = GenerationOptions(base_url=fake.base_url, api_key="bench")
        ours = adapter_texts(ADAPTERS[dialect](), MODELS[dialect], options)
        naive = NAIVE[dialect](fake.base_url)
        await measure(ours)  # warm-up: connections, imports, SDK clients
        await measure(naive)
        adapter_samples: list[Sample] = []
        naive_samples: list[Sample] = []
        for _ in range(runs):
            adapter_samples.append(await measure(ours))
            naive_samples.append(await measure(naive))
    for sample in adapter_samples + naive_samples:
        assert sample.tokens == chunks, f"{dialect}: {sample.tokens} tokens instead of {chunks}"
    result = {
        "adapter_rate": statistics.median(s.rate for s in adapter_samples),
        "naive_rate": statistics.median(s.rate for s in naive_samples),
        "adapter_ttft": statistics.median(s.ttft for s in adapter_samples),
        "naive_ttft": statistics.median(s.ttft for s in naive_samples),
    }
    result["ratio"] = result["adapter_rate"] / result["naive_rate"]
    return result


async def bench_local(*, runs: int, max_tokens: int) -> dict[str, float]:
    provider = LocalProvider()
    options = GenerationOptions(temperature=0, max_tokens=max_tokens)
    topics = ["a lighthouse keeper", "a clockmaker", "a river", "a mountain village", "a lost robot"]

    def story(i: int) -> list[ChatMessage]:
        # A different prompt each run, so time to first token includes evaluating it.
        return [ChatMessage(role="user", content=f"Write a long story about {topics[i % len(topics)]}.")]

    load = await measure(lambda: _local_stream(provider, story(0), options))  # the first call loads the model
    samples = [await measure(lambda i=i: _local_stream(provider, story(i + 1), options)) for i in range(runs)]
    return {
        "first_call_ttft": load.ttft,
        "rate": statistics.median(s.rate for s in samples),
        "decode_rate": statistics.median((s.tokens - 1) / (s.total - s.ttft) for s in samples),
        "ttft": statistics.median(s.ttft for s in samples),
        "tokens": statistics.median(s.tokens for s in samples),
    }


async def _local_stream(provider: LocalProvider, messages, options) -> AsyncIterator[str]:
    async for event in provider.stream_chat(model="smollm2", messages=messages, options=options):
        if isinstance(event, TextDelta):
            yield event.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--local-tokens", type=int, default=128)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--only", choices=sorted(ADAPTERS), action="append")
    args = parser.parse_args()

    print(
        f"{args.chunks} unpaced chunks per stream, median of {args.runs} runs, {time.strftime('%Y-%m-%d %H:%M')}"
    )
    print(
        f"{'provider':<8} {'adapter tok/s':>14} {'naive tok/s':>12} {'ratio':>6} {'adapter TTFT':>13} {'naive TTFT':>11}"
    )
    for dialect in args.only or sorted(ADAPTERS):
        r = asyncio.run(bench_remote(dialect, chunks=args.chunks, runs=args.runs))
        print(
            f"{dialect:<8} {r['adapter_rate']:>14,.0f} {r['naive_rate']:>12,.0f} {r['ratio']:>6.2f}"
            f" {r['adapter_ttft'] * 1000:>10.2f} ms {r['naive_ttft'] * 1000:>8.2f} ms"
        )
    if not args.skip_local:
        r = asyncio.run(bench_local(runs=max(1, min(args.runs, 3)), max_tokens=args.local_tokens))
        print(
            f"local    {r['rate']:.0f} tok/s end to end ({r['decode_rate']:.0f} tok/s decoding, "
            f"{r['tokens']:.0f} tokens), TTFT {r['ttft'] * 1000:.0f} ms "
            f"(first call, loading the model: {r['first_call_ttft'] * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
