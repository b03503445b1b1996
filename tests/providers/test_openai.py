"""OpenAI-specific behaviour: request shape, tool-call assembly quirks, finish and [DONE] rules."""

from __future__ import annotations

import asyncio

import pytest

from providers.base import ChatMessage, Finished, GenerationOptions, TextDelta, ToolCall, ToolSpec
from providers.openai_compat import OpenAIProvider
from tests.fakes import FakeOpenAI, FakeToolCall, Reply
from tests.providers.helpers import TEST_KEY, Stopwatch, collect, collect_error

pytestmark = pytest.mark.timeout(30)

WEATHER = ToolSpec(
    name="get_weather", description="Weather.", parameters={"type": "object", "properties": {}}
)


def options(server: FakeOpenAI, **kwargs) -> GenerationOptions:
    return GenerationOptions(base_url=server.base_url, **kwargs)


async def test_it_sends_history_tools_and_settings_as_chat_completions(fake_openai: FakeOpenAI) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Weather in Paris?"),
        ChatMessage(role="assistant", tool_calls=(call,)),
        ChatMessage(role="tool", content="Sunny", tool_call_id="call_1", name="get_weather"),
    ]
    opts = options(fake_openai, api_key=TEST_KEY, temperature=0.2, max_tokens=64, extra={"seed": 7})

    await collect(
        OpenAIProvider().stream_chat(model="gpt-x", messages=messages, tools=[WEATHER], options=opts)
    )

    request = fake_openai.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {TEST_KEY}"
    body = request.json
    assert body["model"] == "gpt-x"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0.2
    assert body["max_tokens"] == 64
    assert body["seed"] == 7
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER.parameters},
        }
    ]
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
    ]


async def test_a_local_server_gets_a_placeholder_key(fake_openai: FakeOpenAI) -> None:
    await collect(OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai)))

    assert fake_openai.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_each_call_is_sent_with_its_own_key_and_the_extras_override(fake_openai: FakeOpenAI) -> None:
    # SDK clients are kept per loop, base URL and key: a kept client must never lend its key out.
    provider = OpenAIProvider()
    for key in ("sk-first-1234567890", "sk-second-1234567890", "sk-first-1234567890"):
        opts = options(fake_openai, api_key=key, extra={"model": f"served-{key[3:8]}"})
        await collect(provider.stream_chat(model="m", messages=[], options=opts))

    sent = [(r.headers["authorization"], r.json["model"]) for r in fake_openai.requests]
    assert sent == [
        ("Bearer sk-first-1234567890", "served-first"),
        ("Bearer sk-second-1234567890", "served-secon"),
        ("Bearer sk-first-1234567890", "served-first"),
    ]


async def test_the_base_url_comes_from_the_constructor_or_the_call(fake_openai: FakeOpenAI) -> None:
    provider = OpenAIProvider(base_url=fake_openai.base_url)

    events = await collect(provider.stream_chat(model="m", messages=[], options=GenerationOptions()))

    assert isinstance(events[-1], Finished)


async def test_llama_cpp_repeated_ids_and_names_are_not_concatenated(fake_openai: FakeOpenAI) -> None:
    calls = (
        FakeToolCall(name="get_weather", arguments={"city": "Paris"}, id="call__0_get_weather", pieces=4),
    )
    fake_openai.script(Reply(text="", tool_calls=calls, openai_repeat_ids=True))

    events = await collect(OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai)))

    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall(id="call__0_get_weather", name="get_weather", arguments={"city": "Paris"})
    ]


async def test_parallel_tool_calls_come_out_whole_and_in_order(fake_openai: FakeOpenAI) -> None:
    calls = (
        FakeToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_a"),
        FakeToolCall(name="get_time", arguments={"zone": "CET"}, id="call_b"),
    )
    fake_openai.script(Reply(text="", tool_calls=calls))

    events = await collect(OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai)))

    assert [(e.id, e.name, e.arguments) for e in events if isinstance(e, ToolCall)] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_time", {"zone": "CET"}),
    ]
    assert events[-1].reason == "tool_calls"


async def test_tool_arguments_that_are_not_json_are_a_protocol_error(fake_openai: FakeOpenAI) -> None:
    call = FakeToolCall(name="get_weather", arguments={}, raw_arguments='{"city": "Par', pieces=2)
    fake_openai.script(Reply(text="", tool_calls=(call,)))

    _, error = await collect_error(
        OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai))
    )

    assert error.kind == "protocol"
    assert "get_weather" in error.message


async def test_done_without_a_finish_reason_is_incomplete(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(text="half a reply", extra={"omit_finish": True}))

    events, error = await collect_error(
        OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai))
    )

    assert error.kind == "incomplete"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "half a reply"


async def test_a_finish_reason_without_done_still_finishes(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(text="whole reply", extra={"omit_done": True}))

    events = await collect(OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai)))

    assert events[-1].reason == "stop"


@pytest.mark.parametrize(("wire", "reason"), [("length", "length"), ("content_filter", "blocked")])
async def test_finish_reasons_are_translated(fake_openai: FakeOpenAI, wire: str, reason: str) -> None:
    fake_openai.script(Reply(text="cut", finish_reason=wire))

    events = await collect(OpenAIProvider().stream_chat(model="m", messages=[], options=options(fake_openai)))

    assert events[-1].reason == reason


async def test_usage_can_be_left_out_for_servers_that_reject_stream_options(fake_openai: FakeOpenAI) -> None:
    opts = options(fake_openai, extra={"include_usage": False})

    events = await collect(OpenAIProvider().stream_chat(model="m", messages=[], options=opts))

    assert "stream_options" not in fake_openai.requests[0].json
    assert events[-1].usage.total_tokens == 0


async def test_a_retry_after_ms_header_wins_over_retry_after(fake_openai: FakeOpenAI) -> None:
    # OpenAI sends both; the millisecond one is more precise.
    fake_openai.script(Reply(status=429, retry_after="7", extra={"retry_after_ms": "300"}), Reply(text="ok"))
    provider = OpenAIProvider(retry_after_cap=5)
    watch = Stopwatch()

    # A deadline under the 5 s the capped Retry-After would take: the 300 ms header was the one used.
    events = await asyncio.wait_for(
        collect(provider.stream_chat(model="m", messages=[], options=options(fake_openai))), 4
    )

    assert watch.elapsed >= 0.3
    assert events[-1].reason == "stop"
    assert len(fake_openai.requests) == 2
