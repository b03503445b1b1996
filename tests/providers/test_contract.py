"""The streaming and resilience contract, checked for every remote adapter against its fake server.

Each test runs three times (openai, gemini, ollama) through the real SDKs / httpx and a loopback
server speaking the provider's wire format.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from providers.base import (
    Finished,
    IncompleteStream,
    TextDelta,
    Timeouts,
    ToolCall,
    ToolSpec,
    Usage,
    UsageReport,
)
from tests.fakes import FakeToolCall, Reply
from tests.providers.helpers import FAST_RETRY, TEST_KEY, Remote, Stopwatch, collect, collect_error

pytestmark = pytest.mark.timeout(30)

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
FAST = Timeouts(connect=2, first_token=2, between_chunks=0.3, total=10)


def texts(events: list) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_it_streams_a_reply(remote: Remote) -> None:
    remote.server.script(Reply(text="The quick brown fox jumps over the lazy dog", chunks=6))

    events = await collect(remote.stream())

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) == 6
    assert texts(events) == "The quick brown fox jumps over the lazy dog"
    assert isinstance(events[-1], Finished)
    assert events[-1].reason == "stop"
    assert sum(isinstance(e, Finished) for e in events) == 1
    assert len(remote.server.requests) == 1


async def test_it_assembles_a_tool_call_from_several_chunks(remote: Remote) -> None:
    arguments = {"city": "Paris", "units": "metric", "days": [1, 2, 3]}
    call = FakeToolCall(name="get_weather", arguments=arguments, id="call_abc123", pieces=5)
    remote.server.script(Reply(text="Let me check.", tool_calls=(call,)))

    events = await collect(remote.stream(tools=[WEATHER]))

    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [ToolCall(id="call_abc123", name="get_weather", arguments=arguments)]
    assert texts(events) == "Let me check."
    assert events[-1] == Finished(reason="tool_calls", usage=events[-1].usage)
    assert remote.server.requests[0].frames_sent >= 3  # the call came over several frames of the stream


async def test_it_records_usage(remote: Remote) -> None:
    remote.server.script(Reply(text="one two three", usage=(42, 3)))

    events = await collect(remote.stream())

    assert UsageReport(usage=Usage(input_tokens=42, output_tokens=3)) in events
    assert events[-1].usage == Usage(input_tokens=42, output_tokens=3)
    assert events[-1].usage.total_tokens == 45


async def test_it_waits_for_retry_after_then_succeeds(remote: Remote) -> None:
    remote.server.script(Reply(status=429, retry_after="1"), Reply(text="after the wait"))
    watch = Stopwatch()

    events = await collect(remote.stream())

    assert watch.elapsed >= 1.0
    assert texts(events) == "after the wait"
    assert len(remote.server.requests) == 2


async def test_a_retry_after_above_the_cap_fails_fast(remote: Remote) -> None:
    remote = remote.with_policy(retry_after_cap=5.0)
    remote.server.script(Reply(status=429, retry_after="30", error_message="slow down"))
    # Failing fast: no wait for the 30 s, nor for the 5 s cap (a deadline well under either).
    _, error = await asyncio.wait_for(collect_error(remote.stream()), 4)

    assert error.kind == "rate_limited"
    assert error.retry_after == 30.0
    assert error.status == 429
    assert len(remote.server.requests) == 1  # no retry after a wait
    assert len(remote.server.requests) == 1


async def test_it_retries_a_500_with_backoff(remote: Remote) -> None:
    remote.server.script(Reply(status=500), Reply(status=503), Reply(text="third time lucky"))
    watch = Stopwatch()

    events = await collect(remote.stream())

    assert texts(events) == "third time lucky"
    assert len(remote.server.requests) == 3
    assert watch.elapsed >= 0.5 + 1.0  # the two backoffs
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(remote.server.requests)]
    assert 0.5 <= gaps[0] < 1.0 <= gaps[1] < 2.0


async def test_it_gives_up_after_three_attempts(remote: Remote) -> None:
    remote = remote.with_policy(**FAST_RETRY)
    remote.server.script(Reply(status=502), Reply(status=502), Reply(status=502), Reply(text="too late"))

    _, error = await collect_error(remote.stream())

    assert error.kind == "unavailable"
    assert error.status == 502
    assert len(remote.server.requests) == 3


@pytest.mark.parametrize(("status", "kind"), [(400, "bad_request"), (401, "auth"), (404, "bad_request")])
async def test_a_client_error_is_tried_exactly_once(remote: Remote, status: int, kind: str) -> None:
    remote.server.script(Reply(status=status, error_message="no such thing"), Reply(text="never sent"))

    _, error = await collect_error(remote.stream())

    assert error.kind == kind
    assert error.status == status
    assert "no such thing" in error.message
    assert len(remote.server.requests) == 1


async def test_a_stall_is_caught_by_the_between_chunk_timeout(remote: Remote) -> None:
    remote.server.script(Reply(text="one two three four five", stall_after=3))
    watch = Stopwatch()

    events, error = await collect_error(remote.stream(timeouts=FAST))

    assert error.kind == "timeout"
    assert "stalled" in error.message
    assert watch.elapsed >= 0.3  # not before the between-chunk timeout (a stall never ends by itself)
    assert texts(events)  # part of the reply had arrived: no retry after that
    assert len(remote.server.requests) == 1
    assert await remote.server.wait_for_async(lambda reqs: reqs[0].client_closed, timeout=1.0)


async def test_no_first_token_in_time_is_a_timeout(remote: Remote) -> None:
    remote = remote.with_policy(max_attempts=2, **FAST_RETRY)
    await collect(remote.stream())  # warm up: SDK clients are made on first use, inside the first wait
    remote.server.script(Reply(headers_delay=3.0), Reply(headers_delay=3.0))
    timeouts = Timeouts(connect=2, first_token=0.5, between_chunks=5, total=10)

    _, error = await collect_error(remote.stream(timeouts=timeouts))

    assert error.kind == "timeout"
    assert "first-token" in error.message
    assert len(remote.server.requests) == 1 + 2  # nothing was yielded, so it was worth one more try


async def test_the_total_timeout_bounds_a_slow_stream(remote: Remote) -> None:
    remote.server.script(Reply.words(100, tokens_per_s=20))
    timeouts = Timeouts(connect=2, first_token=2, between_chunks=2, total=0.6)
    watch = Stopwatch()

    events, error = await collect_error(remote.stream(timeouts=timeouts))

    assert error.kind == "timeout"
    assert "total" in error.message
    assert watch.elapsed >= 0.6  # not before the total timeout
    assert 3 <= len(events) < 100  # cut well before the 5 s the whole reply takes


async def test_a_stream_cut_without_a_finish_is_incomplete(remote: Remote) -> None:
    remote.server.script(Reply(text="one two three four five", cut_after=3))

    events, error = await collect_error(remote.stream())

    assert isinstance(error, IncompleteStream)
    assert error.kind == "incomplete"
    assert not any(isinstance(e, Finished) for e in events)
    assert len(remote.server.requests) == 1


async def test_an_empty_reply_is_incomplete_not_complete(remote: Remote) -> None:
    # llama.cpp's server answers a failed streaming request with 200 and an empty body.
    remote = remote.with_policy(max_attempts=1)
    remote.server.script(Reply(cut_after=0))

    events, error = await collect_error(remote.stream())

    assert error.kind == "incomplete"
    assert events == []


async def test_a_malformed_chunk_is_a_protocol_error(remote: Remote) -> None:
    remote.server.script(Reply(text="one two three four", malformed_after=2))

    _, error = await collect_error(remote.stream())

    assert error.kind == "protocol"
    assert len(remote.server.requests) == 1


async def test_a_dropped_connection_is_incomplete(remote: Remote) -> None:
    remote.server.script(Reply(text="one two three four five", drop_after=3))

    events, error = await collect_error(remote.stream())

    assert error.kind == "incomplete"
    assert "dropped" in error.message
    assert texts(events)
    assert len(remote.server.requests) == 1


async def test_an_unreachable_server_is_unavailable(remote: Remote) -> None:
    remote = remote.with_policy(**FAST_RETRY)
    remote.server.stop()

    _, error = await collect_error(remote.stream())

    assert error.kind == "unavailable"


async def test_it_never_retries_after_the_first_token(remote: Remote) -> None:
    remote.server.script(Reply(text="one two three", error_after=2, error_status=500), Reply(text="never"))

    events, error = await collect_error(remote.stream())

    assert texts(events).startswith("one ")  # OpenAI's first frame is a role-only delta
    assert "three" not in texts(events)
    assert error.kind == "unavailable"
    assert len(remote.server.requests) == 1


async def test_closing_the_stream_closes_the_upstream_connection(remote: Remote) -> None:
    remote.server.script(Reply.words(200, tokens_per_s=50))
    stream = remote.stream()

    first = await anext(stream)
    assert isinstance(first, TextDelta)
    # The rest of the reply takes 4 s: a close that read it out would miss this deadline.
    await asyncio.wait_for(stream.aclose(), 2)
    await asyncio.sleep(0)  # one loop pass: asyncio closes a socket on the pass after transport.close()

    # Blocking wait: a close left to garbage collection (a task scheduled later) could not happen now.
    assert remote.server.wait_for(lambda reqs: reqs[0].client_closed, timeout=1.0)
    request = remote.server.requests[0]
    assert request.finished_at is None
    assert request.frames_sent < 50


async def test_cancelling_the_consumer_task_closes_the_upstream_connection(remote: Remote) -> None:
    remote.server.script(Reply.words(200, tokens_per_s=50))
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in remote.stream():
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await remote.server.wait_for_async(lambda reqs: reqs[0].client_closed, timeout=1.0)


async def test_the_key_is_sent_but_never_shown(remote: Remote) -> None:
    remote.server.script(Reply(status=401, error_message=f"Incorrect API key provided: {TEST_KEY}"))

    _, error = await collect_error(remote.stream())

    assert error.kind == "auth"
    assert TEST_KEY not in error.message
    assert TEST_KEY not in repr(error)
    headers = remote.server.requests[0].headers
    sent = headers.get("authorization", "") + headers.get("x-goog-api-key", "")
    assert TEST_KEY in sent
    assert TEST_KEY not in repr(remote.options())


async def test_the_connection_is_reused_after_a_complete_stream(remote: Remote) -> None:
    # The adapter reads each body to its end, so the next request skips a TCP handshake.
    await collect(remote.stream())
    await collect(remote.stream())

    first, second = remote.server.requests
    assert first.connection == second.connection


async def test_status_lists_the_models(remote: Remote) -> None:
    remote.server.models = ["model-b", "model-a"]

    status = await remote.provider.status(options=remote.options())

    assert status.name == remote.name
    assert status.reachable is True
    assert status.models == ["model-a", "model-b"]


async def test_status_of_an_unreachable_server_is_not_an_exception(remote: Remote) -> None:
    remote.server.stop()

    status = await remote.provider.status(options=remote.options(timeouts=Timeouts(connect=1)))

    assert status.reachable is False
    assert status.models == []
    assert "connect" in status.detail


async def test_one_adapter_serves_several_event_loops(remote: Remote) -> None:
    # The run engine and the REST API may call the same adapter from different loops (threads).
    remote.server.script(Reply(text="from a thread"), Reply(text="and back"))

    def in_another_loop() -> str:
        return asyncio.run(_text_of(remote))

    assert await asyncio.to_thread(in_another_loop) == "from a thread"
    assert await _text_of(remote) == "and back"


async def _text_of(remote: Remote) -> str:
    return texts(await collect(remote.stream()))
