"""Small parts the adapters share: framing, Retry-After, backoff, safe messages, the attempt loop."""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from providers._wire import LineDecoder, SSEDecoder
from providers.base import (
    Finished,
    GenerationOptions,
    IncompleteStream,
    ProviderError,
    StreamEvent,
    TextDelta,
    Timeouts,
    Usage,
    safe_message,
)
from providers.resilience import (
    RetryPolicy,
    StreamWatch,
    is_retryable,
    kind_for_status,
    parse_retry_after,
    resilient_stream,
)


def test_sse_events_are_reassembled_across_reads() -> None:
    decoder = SSEDecoder()
    wire = b'data: {"a":1}\n\n: ping\n\nevent: x\nid: 3\ndata: {"b":\r\ndata: 2}\r\n\r\ndata:[DONE]\n\n'
    events = []
    for i in range(0, len(wire), 5):  # split everywhere, mid-line and mid-CRLF
        events += decoder.feed(wire[i : i + 5])

    assert events == [b'{"a":1}', b'{"b":\n2}', b"[DONE]"]
    assert decoder.close() == []


def test_sse_data_without_a_final_blank_line_is_kept() -> None:
    decoder = SSEDecoder()

    assert decoder.feed(b'data: {"last":true}') == []
    assert decoder.close() == [b'{"last":true}']


def test_ndjson_lines_are_reassembled_across_reads() -> None:
    decoder = LineDecoder()

    lines = decoder.feed(b'{"a":1}\n\n{"b"') + decoder.feed(b":2}\n") + decoder.feed(b'{"c":3}')

    assert lines == [b'{"a":1}', b'{"b":2}']
    assert decoder.close() == [b'{"c":3}']


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
        ({"retry-after": "-4"}, 0.0),
    ],
)
def test_retry_after_is_read_in_seconds(headers: dict, expected: float | None) -> None:
    assert parse_retry_after(httpx.Headers(headers)) == expected


def test_retry_after_may_be_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)

    assert 28 <= parse_retry_after({"retry-after": when}) <= 31


def test_backoff_grows_with_bounded_jitter() -> None:
    policy = RetryPolicy()

    for failures, base in [(1, 0.5), (2, 1.0), (3, 2.0), (9, 2.0)]:
        delays = [policy.backoff_for(failures) for _ in range(200)]
        assert base <= min(delays) and max(delays) <= base * 1.25
        assert max(delays) > min(delays)  # there is jitter


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "bad_request", False),
        (401, "auth", False),
        (403, "auth", False),
        (404, "bad_request", False),
        (408, "timeout", True),
        (422, "bad_request", False),
        (429, "rate_limited", True),
        (500, "unavailable", True),
        (503, "unavailable", True),
    ],
)
def test_statuses_map_to_one_kind_and_retry_rule(status: int, kind: str, retryable: bool) -> None:
    assert kind_for_status(status) == kind
    assert is_retryable(ProviderError(kind_for_status(status), "x", status=status)) is retryable  # type: ignore[arg-type]


def test_messages_shown_to_users_hide_secrets() -> None:
    message = safe_message(
        "bad key sk-proj-abcdefghijklmnop1234 and my-own-secret\nTraceback", secrets=["my-own-secret"]
    )

    assert "abcdefghijklmnop" not in message
    assert "my-own-secret" not in message
    assert "\n" not in message
    assert len(safe_message("x" * 5000)) <= 300


def test_options_never_show_the_key() -> None:
    options = GenerationOptions(api_key="sk-live-123456789")

    assert "sk-live-123456789" not in repr(options)
    assert "sk-live-123456789" not in str(options)


# The attempt loop with scripted attempts (a provider that does not use HTTP, like the local one).


async def _run(attempts: list, **kwargs) -> tuple[list[StreamEvent], ProviderError | None, int]:
    calls = 0

    def attempt(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
        nonlocal calls
        calls += 1
        return attempts[calls - 1](watch)

    events: list[StreamEvent] = []
    kwargs.setdefault("policy", RetryPolicy(backoff=(0.01,)))
    kwargs.setdefault("timeouts", Timeouts())
    try:
        async for event in resilient_stream(attempt, provider="test", **kwargs):
            events.append(event)
    except ProviderError as exc:
        return events, exc, calls
    return events, None, calls


async def _ok(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
    watch.tick()
    yield [TextDelta(text="ok")]
    yield [Finished(reason="stop", usage=Usage())]


async def _unavailable(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
    raise ProviderError("unavailable", "down")
    yield  # pragma: no cover


async def _no_finish(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
    yield [TextDelta(text="half")]


async def test_an_attempt_that_forgets_to_finish_is_incomplete() -> None:
    events, error, _ = await _run([_no_finish])

    assert isinstance(error, IncompleteStream)
    assert events == [TextDelta(text="half")]


async def test_nothing_after_finished_is_relayed() -> None:
    async def chatty(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
        yield [Finished(reason="stop", usage=Usage()), TextDelta(text="after the end")]
        yield [TextDelta(text="and more")]

    events, error, _ = await _run([chatty])

    assert error is None
    assert events == [Finished(reason="stop", usage=Usage())]


async def test_an_unexpected_exception_becomes_a_provider_error() -> None:
    async def broken(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
        raise KeyError("choices")
        yield  # pragma: no cover

    _, error, calls = await _run([broken])

    assert error is not None and error.kind == "protocol"
    assert isinstance(error.__cause__, KeyError)
    assert calls == 1


async def test_retries_stop_at_the_total_deadline() -> None:
    policy = RetryPolicy(backoff=(5.0,))
    # A deadline under the 5 s backoff: giving up must not wait for it first.
    _, error, calls = await asyncio.wait_for(
        _run([_unavailable, _ok], policy=policy, timeouts=Timeouts(total=1.0)), 3
    )

    assert error is not None and error.kind == "unavailable"
    assert calls == 1  # waiting 5 s would overrun the 1 s budget, so no second attempt


async def test_ticks_keep_a_slow_but_steady_attempt_alive() -> None:
    async def steady(watch: StreamWatch) -> AsyncIterator[list[StreamEvent]]:
        for _ in range(6):  # 0.6 s with no event but a tick every 0.1 s (e.g. tool-call fragments)
            await asyncio.sleep(0.1)
            watch.tick()
        yield [Finished(reason="stop", usage=Usage())]

    events, error, _ = await _run([steady], timeouts=Timeouts(first_token=0.3, between_chunks=0.3))

    assert error is None
    assert events == [Finished(reason="stop", usage=Usage())]


async def test_the_consumer_holding_an_event_does_not_count_as_a_stall() -> None:
    stream = resilient_stream(
        lambda watch: _ok(watch), provider="test", timeouts=Timeouts(between_chunks=0.1), policy=RetryPolicy()
    )
    first = await anext(stream)
    await asyncio.sleep(0.3)  # longer than between_chunks, but the time is ours, not the provider's

    assert first == TextDelta(text="ok")
    assert isinstance(await anext(stream), Finished)
