"""Gemini-specific behaviour: the request google-genai builds, function responses, finish reasons."""

from __future__ import annotations

import pytest

from providers.base import ChatMessage, Finished, GenerationOptions, TextDelta, ToolCall, ToolSpec, Usage
from providers.gemini import GeminiProvider
from tests.fakes import FakeGemini, FakeToolCall, Reply
from tests.providers.helpers import HELLO, TEST_KEY, collect, collect_error

pytestmark = pytest.mark.timeout(30)

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)


def options(server: FakeGemini, **kwargs) -> GenerationOptions:
    return GenerationOptions(base_url=server.base_url, api_key=TEST_KEY, **kwargs)


async def test_it_sends_history_and_tools_in_geminis_format(fake_gemini: FakeGemini) -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", content="Weather in Paris and Rome?"),
        ChatMessage(
            role="assistant",
            content="Checking.",
            tool_calls=(
                ToolCall(id="gemini-call-1f", name="get_weather", arguments={"city": "Paris"}),
                ToolCall(id="fc-42", name="get_weather", arguments={"city": "Rome"}),
            ),
        ),
        ChatMessage(role="tool", content="Sunny", tool_call_id="gemini-call-1f", name="get_weather"),
        ChatMessage(role="tool", content='{"sky": "cloudy"}', tool_call_id="fc-42"),  # name looked up by id
    ]
    opts = options(fake_gemini, temperature=0.3, max_tokens=99)

    await collect(
        GeminiProvider().stream_chat(
            model="gemini-2.5-flash", messages=messages, tools=[WEATHER], options=opts
        )
    )

    request = fake_gemini.requests[0]
    assert request.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert request.headers["x-goog-api-key"] == TEST_KEY
    body = request.json
    assert body["systemInstruction"]["parts"] == [{"text": "Be brief."}]
    assert body["generationConfig"] == {"temperature": 0.3, "maxOutputTokens": 99}
    declaration = body["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather"
    assert (
        declaration.get("parametersJsonSchema") or declaration.get("parameters_json_schema")
    ) == WEATHER.parameters
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    model_parts = body["contents"][1]["parts"]
    assert model_parts[0] == {"text": "Checking."}
    # An id we made up is never sent to Gemini; one Gemini gave us goes back.
    assert model_parts[1] == {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    assert model_parts[2]["functionCall"] == {"id": "fc-42", "name": "get_weather", "args": {"city": "Rome"}}
    responses = [p["functionResponse"] for p in body["contents"][2]["parts"]]
    assert responses == [
        {"name": "get_weather", "response": {"result": "Sunny"}},
        {"id": "fc-42", "name": "get_weather", "response": {"sky": "cloudy"}},
    ]


async def test_the_api_version_is_configurable(fake_gemini: FakeGemini) -> None:
    provider = GeminiProvider(api_version="v1alpha")

    await collect(
        provider.stream_chat(
            model="m", messages=[ChatMessage(role="user", content="hi")], options=options(fake_gemini)
        )
    )
    await collect(
        provider.stream_chat(
            model="m",
            messages=[ChatMessage(role="user", content="hi")],
            options=options(fake_gemini, api_version="v1"),
        )
    )

    assert [r.path for r in fake_gemini.requests] == [
        "/v1alpha/models/m:streamGenerateContent",
        "/v1/models/m:streamGenerateContent",
    ]


async def test_a_function_call_arrives_whole_with_an_id(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(
        Reply(text="", tool_calls=(FakeToolCall(name="get_weather", arguments={"city": "Oslo"}),))
    )

    events = await collect(
        GeminiProvider().stream_chat(model="m", messages=HELLO, options=options(fake_gemini))
    )

    (call,) = [e for e in events if isinstance(e, ToolCall)]
    assert (call.name, call.arguments) == ("get_weather", {"city": "Oslo"})
    assert call.id.startswith("gemini-call-")
    assert events[-1].reason == "tool_calls"


@pytest.mark.parametrize(("wire", "reason"), [("length", "length"), ("content_filter", "blocked")])
async def test_finish_reasons_are_translated(fake_gemini: FakeGemini, wire: str, reason: str) -> None:
    fake_gemini.script(Reply(text="cut short", finish_reason=wire, usage=(5, 2)))

    events = await collect(
        GeminiProvider().stream_chat(model="m", messages=HELLO, options=options(fake_gemini))
    )

    assert events[-1] == Finished(reason=reason, usage=Usage(input_tokens=5, output_tokens=2))


async def test_a_blocked_prompt_is_a_blocked_error(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(Reply(extra={"block_reason": "SAFETY"}))

    events, error = await collect_error(
        GeminiProvider().stream_chat(model="m", messages=HELLO, options=options(fake_gemini))
    )

    assert error.kind == "blocked"
    assert events == []


async def test_retry_info_in_the_error_details_counts_as_retry_after(fake_gemini: FakeGemini) -> None:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "42s"}]
    fake_gemini.script(Reply(status=429, extra={"error_details": details}))

    _, error = await collect_error(
        GeminiProvider(retry_after_cap=5).stream_chat(model="m", messages=HELLO, options=options(fake_gemini))
    )

    assert error.kind == "rate_limited"
    assert error.retry_after == 42.0
    assert len(fake_gemini.requests) == 1


async def test_an_empty_conversation_is_a_bad_request(fake_gemini: FakeGemini) -> None:
    _, error = await collect_error(
        GeminiProvider().stream_chat(model="m", messages=[], options=options(fake_gemini))
    )

    assert error.kind == "bad_request"
    assert fake_gemini.requests == []


async def test_text_parts_stream_in_order(fake_gemini: FakeGemini) -> None:
    fake_gemini.script(Reply(text="alpha beta gamma"))

    events = await collect(
        GeminiProvider().stream_chat(model="m", messages=HELLO, options=options(fake_gemini))
    )

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["alpha ", "beta ", "gamma"]
