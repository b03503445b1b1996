"""How a ``RunAgentInput`` is read (``realtime.dialects.agui.run_input_parse``): what is new in
the run, what is history, and the clear refusals (docs/dialects.md, "AG-UI")."""

from __future__ import annotations

import json

import pytest

from core.errors import ValidationFailed
from realtime.dialects.agui import client_message_key, run_input_parse, thread_conversation_id


def _parse(messages, **extra):
    body = {"threadId": "t", "runId": "r", "messages": messages, "state": {}, **extra}
    return run_input_parse(json.dumps(body).encode())


USER = {"id": "u1", "role": "user", "content": "Hi"}
ASSISTANT = {
    "id": "a1",
    "role": "assistant",
    "content": "Let me check.",
    "toolCalls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
}


def test_a_final_user_message_is_sent_and_earlier_turns_are_history():
    plan = _parse(
        [
            USER,
            ASSISTANT,
            {"id": "s", "role": "system", "content": "ignored"},
            {
                "id": "u2",
                "role": "user",
                "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "you?"}],
            },
        ]
    )
    assert (plan.send, plan.send_id) == ("And you?", "u2")
    assert plan.history == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Let me check."},
    ]
    assert plan.tool_answers == []


def test_tool_messages_after_the_last_assistant_message_answer_its_calls():
    plan = _parse(
        [
            USER,
            ASSISTANT,
            {"id": "t1", "role": "tool", "toolCallId": "c1", "content": '{"temp": 21}'},
            {"id": "t2", "role": "tool", "toolCallId": "c2", "content": "plain", "error": "failed"},
        ]
    )
    assert plan.send is None
    assert plan.tool_answers == [("c1", {"temp": 21}, False), ("c2", "plain", True)]


def test_frontend_tools_state_and_context_are_carried():
    tool = {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {}},
    }
    plan = _parse([USER], tools=[tool], state={"turns": 1}, context=[{"description": "tz", "value": "UTC"}])
    assert plan.client_tools == [{**tool, "execution": "client"}]
    assert plan.context == {"state": {"turns": 1}, "tz": "UTC"}


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([], "messages"),
        ([ASSISTANT], "messages"),
        (
            [
                {
                    "id": "u",
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "url", "value": "http://x/i.png"}}],
                }
            ],
            "messages.0",
        ),
        ("not a list", "messages"),
        ([{"id": "u", "role": "user", "content": "nul \x00 here"}], "messages.0"),
        ([{"id": "u\x00", "role": "user", "content": "ok"}], "messages.0.id"),
    ],
)
def test_bad_input_is_a_validation_error_naming_the_field(messages, field):
    with pytest.raises(ValidationFailed) as caught:
        _parse(messages)
    assert any(key.startswith(field) for key in caught.value.details), caught.value.details


def test_ids_are_per_user_and_bounded():
    assert thread_conversation_id(1, "t") == thread_conversation_id(1, "t") != thread_conversation_id(2, "t")
    assert len(client_message_key("x" * 500)) <= 128
    assert client_message_key("u1") == "agui:u1"
