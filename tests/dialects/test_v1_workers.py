"""``/v1`` where runs execute on a run worker (daphne and a worker sharing Redis and PostgreSQL, as
docker-compose.yml runs it): the official ``openai`` SDK streams a reply, answers a client tool
call (the answer reaches the run on the worker) and continues a response by its id."""

from __future__ import annotations

import json

import openai
import pytest

from tests.fakes.process import FakeServerProcess
from tests.fakes.script import FakeToolCall, Reply
from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def fake_openai():
    with FakeServerProcess("openai") as fake:
        yield fake


@pytest.fixture(scope="module")
def nexus(redis_server_url, postgres_url, tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("v1-workers"), redis_server_url, database_url=postgres_url)
    try:
        cluster.start(webs=1, workers=1)
        yield cluster
    finally:
        cluster.stop()


async def test_the_sdk_against_runs_on_a_worker(nexus, fake_openai):
    user, token = await nexus.user()
    agent, _ = await nexus.openai_conversation(user, fake_openai.base_url)
    client = openai.AsyncOpenAI(base_url=f"{nexus.http()}/v1", api_key=token, max_retries=0, timeout=30)
    call = FakeToolCall(name="get_weather", arguments={"city": "Oslo"}, id="call_oslo_workers")
    fake_openai.script(
        Reply(text="On a worker.", chunks=3),
        Reply(text="", tool_calls=(call,)),
        Reply(text="Cold in Oslo."),
        Reply(text="Noted."),
        Reply(text="Remembered."),
    )
    stream = await client.chat.completions.create(
        model=agent, messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "On a worker."

    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    asked = await client.chat.completions.create(model=agent, messages=messages, tools=[WEATHER])
    assert asked.choices[0].finish_reason == "tool_calls"
    (tool_call,) = asked.choices[0].message.tool_calls
    assert tool_call.id == "call_oslo_workers" and json.loads(tool_call.function.arguments) == {
        "city": "Oslo"
    }
    messages += [
        asked.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": tool_call.id, "content": "-3 C"},
    ]
    answered = await client.chat.completions.create(model=agent, messages=messages, tools=[WEATHER])
    assert answered.choices[0].message.content == "Cold in Oslo."

    first = await client.responses.create(model=agent, input="Remember 7.")
    assert first.status == "completed" and first.output_text == "Noted."
    second = await client.responses.create(model=agent, input="Which?", previous_response_id=first.id)
    assert second.output_text == "Remembered."
    sent = [r.json for r in fake_openai.requests if r.path == "/v1/chat/completions"][-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"][-2:] == ["Remember 7.", "Which?"]
    await client.close()
