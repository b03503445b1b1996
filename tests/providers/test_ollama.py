"""Ollama-specific behaviour: the /api/chat request, tool results, finish reasons."""

from __future__ import annotations

import pytest

from providers.base import ChatMessage, GenerationOptions, ToolCall, ToolSpec
from providers.ollama import OllamaProvider
from tests.fakes import FakeOllama, FakeToolCall, Reply
from tests.providers.helpers import collect, collect_error

pytestmark = pytest.mark.timeout(30)

WEATHER = ToolSpec(
    name="get_weather", description="Weather.", parameters={"type": "object", "properties": {}}
)


async def test_it_sends_history_tools_and_settings_to_api_chat(fake_ollama: FakeOllama) -> None:
    call = ToolCall(id="call_1", name="get_weather", arguments={"city": "Paris"})
    messages = [
        ChatMessage(role="user", content="Weather in Paris?"),
        ChatMessage(role="assistant", tool_calls=(call,)),
        ChatMessage(role="tool", content="Sunny", tool_call_id="call_1"),  # name looked up by id
    ]
    options = GenerationOptions(temperature=0.1, max_tokens=50, extra={"options": {"num_ctx": 4096}})
    provider = OllamaProvider(base_url=fake_ollama.base_url, keep_alive="5m")

    await collect(provider.stream_chat(model="llama3.2", messages=messages, tools=[WEATHER], options=options))

    request = fake_ollama.requests[0]
    assert request.path == "/api/chat"
    assert "authorization" not in request.headers
    body = request.json
    assert body["model"] == "llama3.2"
    assert body["stream"] is True
    assert body["keep_alive"] == "5m"
    assert body["options"] == {"num_ctx": 4096, "temperature": 0.1, "num_predict": 50}
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather.", "parameters": WEATHER.parameters},
        }
    ]
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "Sunny", "tool_name": "get_weather"},
    ]


async def test_a_call_without_an_id_gets_one(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(
        Reply(text="", tool_calls=(FakeToolCall(name="get_weather", arguments={"city": "Rome"}),))
    )
    provider = OllamaProvider(base_url=fake_ollama.base_url)

    events = await collect(provider.stream_chat(model="m", messages=[], options=GenerationOptions()))

    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert call.id.startswith("call_")
    assert call.arguments == {"city": "Rome"}
    assert events[-1].reason == "tool_calls"


async def test_length_is_reported(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(text="too long", finish_reason="length"))
    provider = OllamaProvider(base_url=fake_ollama.base_url)

    events = await collect(provider.stream_chat(model="m", messages=[], options=GenerationOptions()))

    assert events[-1].reason == "length"


async def test_an_unknown_model_is_a_bad_request_with_ollamas_message(fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(status=404, error_message="model 'nope' not found, try pulling it first"))
    provider = OllamaProvider(base_url=fake_ollama.base_url)

    _, error = await collect_error(
        provider.stream_chat(model="nope", messages=[], options=GenerationOptions())
    )

    assert error.kind == "bad_request"
    assert "model 'nope' not found" in error.message
    assert len(fake_ollama.requests) == 1


async def test_a_key_becomes_a_bearer_token(fake_ollama: FakeOllama) -> None:
    provider = OllamaProvider(base_url=fake_ollama.base_url)

    await collect(provider.stream_chat(model="m", messages=[], options=GenerationOptions(api_key="k-123456")))

    assert fake_ollama.requests[0].headers["authorization"] == "Bearer k-123456"
