"""The tool policy of a run (SPEC section 12), with the real OpenAI SDK against the loopback fake:
only the tools the agent lists run, a round's calls are capped, and a client tool's answer reaches
only the run whose call it answers, whoever else's run has a call of the same id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async

from agents.tools import ToolContext, ToolOutcome, builtin_tool_spec, server_tool_registry
from tests.factories import make_conversation
from tests.fakes import FakeOpenAI
from tests.fakes.script import FakeToolCall, Reply

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SECRET_ARGUMENT = "s3cret-argument-text"


class TraceTool:
    """A server tool that leaves a trace each time it runs."""

    name = "leave_trace"
    description = "Records that it ran."
    parameters = {"type": "object", "properties": {"note": {"type": "string"}}}

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        self.calls.append(arguments)
        return ToolOutcome(result={"traced": len(self.calls)})


@pytest.fixture
def trace_tool() -> Iterator[TraceTool]:
    tool = TraceTool()
    server_tool_registry().register(tool)
    yield tool
    server_tool_registry().unregister(tool.name)


@pytest.fixture
def fake_openai(settings) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        settings.OPENAI_BASE_URL = server.base_url
        settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-test"}
        yield server


def _agent(tools: list[dict[str, Any]], *, owner=None, name="Tooly"):
    from agents.models import Agent

    return Agent.objects.create(owner=owner, name=name, provider="openai", model="fake-model", tools=tools)


def _trace_spec() -> dict[str, Any]:
    return {
        "name": TraceTool.name,
        "description": TraceTool.description,
        "parameters": TraceTool.parameters,
        "execution": "server",
    }


def _tool_messages(request) -> list[dict[str, Any]]:
    return [m for m in request.json["messages"] if m["role"] == "tool"]


async def test_a_call_to_a_tool_the_agent_does_not_list_is_refused_and_not_run(
    connect, user, fake_openai, trace_tool, caplog
):
    # The tool exists on the server, but this agent lists only current_time.
    agent = await database_sync_to_async(_agent)([builtin_tool_spec("current_time")])
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake_openai.script(
        Reply(
            text="",
            tool_calls=(FakeToolCall(name="leave_trace", arguments={"note": SECRET_ARGUMENT}, id="call_1"),),
        ),
        Reply(text="Sorry, I cannot do that."),
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    with caplog.at_level(logging.WARNING, logger="runs"):
        await client.send({"type": "user_message", "data": {"content": "Leave a trace."}})
        call = await client.until("tool_call")
        result = await client.until("tool_result")
        final = await client.until("agent_message")
        await client.until("run_finished", status="completed")
    assert call["data"]["tool"] == "leave_trace" and call["data"]["execution"] == "server"
    assert result["data"]["is_error"] is True
    assert "not available to this agent" in result["data"]["result"]["error"]
    assert trace_tool.calls == []  # nothing ran
    # The model got the error result and carried on.
    assert final["data"]["content"] == "Sorry, I cannot do that."
    second = fake_openai.requests[1]
    [answer] = _tool_messages(second)
    assert answer["tool_call_id"] == "call_1" and "not available to this agent" in answer["content"]
    # The refusal is logged, without the call's arguments.
    refusals = [r for r in caplog.records if "does not list" in r.getMessage()]
    assert len(refusals) == 1 and "leave_trace" in refusals[0].getMessage()
    assert SECRET_ARGUMENT not in caplog.text


async def test_a_listed_server_tool_still_runs(connect, user, fake_openai, trace_tool):
    agent = await database_sync_to_async(_agent)([_trace_spec()])
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake_openai.script(
        Reply(text="", tool_calls=(FakeToolCall(name="leave_trace", arguments={"note": "hi"}),)),
        Reply(text="Done."),
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Leave a trace."}})
    result = await client.until("tool_result")
    await client.until("run_finished", status="completed")
    assert result["data"] == {**result["data"], "is_error": False, "result": {"traced": 1}}
    assert trace_tool.calls == [{"note": "hi"}]


async def test_calls_past_the_per_round_cap_are_refused(connect, user, fake_openai, trace_tool, settings):
    settings.NEXUS_MAX_TOOL_CALLS_PER_ROUND = 2
    agent = await database_sync_to_async(_agent)([_trace_spec()])
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    calls = tuple(
        FakeToolCall(name="leave_trace", arguments={"note": str(i)}, id=f"call_{i}", pieces=1)
        for i in range(5)
    )
    fake_openai.script(Reply(text="", tool_calls=calls), Reply(text="Done."))
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Trace five times."}})
    await client.until("run_finished", status="completed")
    assert trace_tool.calls == [{"note": "0"}, {"note": "1"}]
    [limit] = [f for f in client.frames if f["type"] == "info" and f["data"]["code"] == "tool_call_limit"]
    assert "3 were refused" in limit["data"]["message"]
    assert len([f for f in client.frames if f["type"] == "tool_call"]) == 2
    # Every call got an answer in the model's next request; the last three are errors.
    answers = _tool_messages(fake_openai.requests[1])
    assert [a["tool_call_id"] for a in answers] == [f"call_{i}" for i in range(5)]
    assert all("Too many tool calls" not in a["content"] for a in answers[:2])
    assert all(json.loads(a["content"])["is_error"] for a in answers[2:])
    assert all("at most 2 per round" in a["content"] for a in answers[2:])


CLIENT_TOOL = {
    "name": "browser_secret",
    "description": "Something only the user's browser knows.",
    "parameters": {"type": "object", "properties": {}},
    "execution": "client",
}


def _answer_seen(fake: FakeOpenAI, user_text: str) -> str:
    """The tool answer in the model's second request of the conversation that opened with ``user_text``."""
    for request in fake.requests:
        messages = request.json["messages"]
        if any(m["role"] == "user" and m["content"] == user_text for m in messages):
            answers = [m for m in messages if m["role"] == "tool"]
            if answers:
                return answers[0]["content"]
    raise AssertionError(f"no second request for {user_text!r}")


async def test_two_users_client_tool_calls_with_the_same_call_id_do_not_cross(
    connect, user, other_user, fake_openai
):
    # The provider makes up the same call id for both users' runs (llama.cpp and friends do).
    fake_openai.default_reply = Reply(text="Thanks.")
    call = FakeToolCall(name="browser_secret", arguments={}, id="call_same")
    agent_a = await database_sync_to_async(_agent)([CLIENT_TOOL], owner=user, name="A")
    agent_b = await database_sync_to_async(_agent)([CLIENT_TOOL], owner=other_user, name="B")
    conversation_a = await database_sync_to_async(make_conversation)(user, agent_a)
    conversation_b = await database_sync_to_async(make_conversation)(other_user, agent_b)
    socket_a = await connect(f"/ws/conversations/{conversation_a.pk}/", user=user)
    socket_b = await connect(f"/ws/conversations/{conversation_b.pk}/", user=other_user)

    fake_openai.script(Reply(text="", tool_calls=(call,)))
    await socket_a.send({"type": "user_message", "data": {"content": "I am A."}})
    call_a = await socket_a.until("tool_call")
    fake_openai.script(Reply(text="", tool_calls=(call,)))
    await socket_b.send({"type": "user_message", "data": {"content": "I am B."}})
    call_b = await socket_b.until("tool_call")
    assert call_a["data"]["toolCallId"] == call_b["data"]["toolCallId"] == "call_same"
    assert call_a["data"]["run_id"] != call_b["data"]["run_id"]

    # A answers first: only A's run may take it (B's run waits for B).
    await socket_a.send({"type": "tool_result", "data": {"toolCallId": "call_same", "result": "A's secret"}})
    await socket_a.until("ack")
    await socket_a.until("run_finished", status="completed")
    await socket_b.send({"type": "tool_result", "data": {"toolCallId": "call_same", "result": "B's secret"}})
    result_b = await socket_b.until("tool_result")
    assert result_b["data"]["result"] == "B's secret"
    await socket_b.until("run_finished", status="completed")

    assert "A's secret" in _answer_seen(fake_openai, "I am A.")
    assert "B's secret" in _answer_seen(fake_openai, "I am B.")
    assert "A's secret" not in _answer_seen(fake_openai, "I am B.")


async def test_another_users_answer_to_a_call_of_the_same_id_is_refused(
    connect, user, other_user, fake_openai
):
    fake_openai.default_reply = Reply(text="Thanks.")
    agent = await database_sync_to_async(_agent)([CLIENT_TOOL], owner=user)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    own = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    fake_openai.script(
        Reply(text="", tool_calls=(FakeToolCall(name="browser_secret", arguments={}, id="call_x"),))
    )
    await own.send({"type": "user_message", "data": {"content": "Ask my browser."}})
    await own.until("tool_call")
    # B cannot open A's conversation, and B's own conversation has no such call.
    other_conversation = await database_sync_to_async(make_conversation)(
        other_user, await database_sync_to_async(_agent)([CLIENT_TOOL], owner=other_user, name="B")
    )
    intruder = await connect(f"/ws/conversations/{other_conversation.pk}/", user=other_user)
    await intruder.until("session_state")
    await intruder.send({"type": "tool_result", "data": {"toolCallId": "call_x", "result": "forged"}})
    assert (await intruder.until("error"))["data"]["code"] == "not_found"
    await own.send({"type": "tool_result", "data": {"toolCallId": "call_x", "result": "genuine"}})
    await own.until("run_finished", status="completed")
    assert "genuine" in _answer_seen(fake_openai, "Ask my browser.")


async def test_a_later_run_with_the_same_call_id_waits_for_its_own_answer(connect, user, fake_openai):
    fake_openai.default_reply = Reply(text="Thanks.")
    call = FakeToolCall(name="browser_secret", arguments={}, id="call_1")
    agent = await database_sync_to_async(_agent)([CLIENT_TOOL], owner=user)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    answers = []
    for text, secret in (("First question.", "first answer"), ("Second question.", "second answer")):
        fake_openai.script(Reply(text="", tool_calls=(call,)))
        await client.send({"type": "user_message", "data": {"content": text}})
        await client.until("tool_call")
        await client.send({"type": "tool_result", "data": {"toolCallId": "call_1", "result": secret}})
        answers.append((await client.until("tool_result"))["data"]["result"])
        await client.until("run_finished", status="completed")
    # The second run did not take the first run's stored answer to a call of the same id.
    assert answers == ["first answer", "second answer"]
