"""The OpenAI-compatible ``/v1`` (SPEC section 11; docs/v1.md), end to end: a real daphne, the
real ``openai`` provider pointed at the loopback fake OpenAI server, and the official ``openai``
SDK (sync and async, streamed and not) as the client, with personal API keys and JWTs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.browser.conftest import Nexus, serve_nexus
from tests.fakes.script import FakeToolCall, Reply

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def nexus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nexus]:
    with serve_nexus(tmp_path_factory.mktemp("nexus-v1"), NEXUS_CLIENT_TOOL_TIMEOUT="60") as server:
        yield server


@pytest.fixture
def agent(nexus: Nexus) -> dict[str, Any]:
    nexus.fake.reset()
    return nexus.create_agent()


def _key(nexus: Nexus, username: str = "alice", **body: Any) -> dict[str, Any]:
    with nexus.api(username) as client:
        response = client.post("keys/", json={"name": "test key", **body})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def key(nexus: Nexus) -> str:
    return _key(nexus)["key"]


def _client(nexus: Nexus, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{nexus.url}/v1", api_key=api_key, max_retries=0, timeout=30)


def _aclient(nexus: Nexus, api_key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{nexus.url}/v1", api_key=api_key, max_retries=0, timeout=30)


def _chats(nexus: Nexus) -> list[Any]:
    return [r for r in nexus.fake.requests if r.path.endswith("/chat/completions")]


def _sent(nexus: Nexus) -> list[tuple[str, Any]]:
    """(role, content) of the last prompt the provider got, the system prompt left out."""
    return [
        (m["role"], m.get("content")) for m in _chats(nexus)[-1].json["messages"] if m["role"] != "system"
    ]


def test_keys_are_shown_once_stored_hashed_listed_and_revoked(nexus, agent):
    created = _key(nexus, scopes=["v1"], expires_in_days=30)
    secret = created["key"]
    assert secret.startswith(created["prefix"] + ".") and created["status"] == "active"
    assert created["scopes"] == ["v1"] and created["expires_at"]
    with nexus.api() as client:
        listed = client.get("keys/").json()["results"]
        assert secret not in json.dumps(listed)
        (row,) = [k for k in listed if k["id"] == created["id"]]
        assert "key" not in row and row["prefix"] == created["prefix"]
        # bad input: a clear 400 with the field
        for bad, field in (({"name": ""}, "name"), ({"name": "x", "scopes": ["root"]}, "scopes")):
            response = client.post("keys/", json=bad)
            assert response.status_code == 400 and field in response.json()["errors"], response.text
        # another user's key is not yours to revoke
        with nexus.api("operator") as other:
            assert other.delete(f"keys/{created['id']}/").status_code == 404
    models = _client(nexus, secret).models.list()
    assert agent["id"] in [m.id for m in models.data]

    # a v1-only key is refused by the REST API; a key never manages keys
    headers = {"Authorization": f"Bearer {secret}"}
    assert httpx.get(f"{nexus.url}/api/conversations/", headers=headers).status_code == 403
    both = _key(nexus, scopes=["v1", "api"])["key"]
    both_headers = {"Authorization": f"Bearer {both}"}
    assert httpx.get(f"{nexus.url}/api/conversations/", headers=both_headers).status_code == 200
    assert httpx.post(f"{nexus.url}/api/keys/", json={"name": "x"}, headers=both_headers).status_code == 403

    with nexus.api() as client:
        revoked = client.delete(f"keys/{created['id']}/")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    with pytest.raises(openai.AuthenticationError) as failure:
        _client(nexus, secret).models.list()
    assert failure.value.status_code == 401
    body = failure.value.body
    assert set(body) >= {"message", "type", "param", "code"} and body["code"] == "invalid_api_key"
    # a made-up key, and no key at all
    with pytest.raises(openai.AuthenticationError):
        _client(nexus, created["prefix"] + ".not-the-secret").models.list()
    response = httpx.get(f"{nexus.url}/v1/models")
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_another_users_agent_is_not_a_model_for_you(nexus, agent, key):
    theirs = nexus.create_agent(username="operator")
    ids = [m.id for m in _client(nexus, key).models.list().data]
    assert agent["id"] in ids and theirs["id"] not in ids
    assert _client(nexus, key).models.retrieve(agent["id"]).id == agent["id"]
    with pytest.raises(openai.NotFoundError):
        _client(nexus, key).models.retrieve(theirs["id"])
    with pytest.raises(openai.NotFoundError) as failure:
        _client(nexus, key).chat.completions.create(
            model=theirs["id"], messages=[{"role": "user", "content": "Hi"}]
        )
    assert failure.value.body["param"] == "model"
    # staff too: /v1's models are one's own agents and the shared ones
    operator_key = _key(nexus, "operator")["key"]
    assert agent["id"] not in [m.id for m in _client(nexus, operator_key).models.list().data]
    # the slug of an agent's name is a model name too
    slug = next(m for m in _client(nexus, key).models.list().data if m.id == agent["id"]).model_dump()["slug"]
    nexus.fake.script(Reply(text="By slug."))
    reply = _client(nexus, key).chat.completions.create(
        model=slug, messages=[{"role": "user", "content": "Hi"}]
    )
    assert reply.choices[0].message.content == "By slug."


def test_chat_completions_whole_and_streamed_with_usage_and_the_run_is_stored(nexus, agent, key):
    client = _client(nexus, key)
    nexus.fake.script(
        Reply(text="Whole answer here.", usage=(11, 4)), Reply(text="Streamed in five pieces.", chunks=5)
    )
    raw = client.chat.completions.with_raw_response.create(
        model=agent["id"],
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Earlier question"},
            {"role": "assistant", "content": "Earlier answer"},
            {"role": "user", "content": "Hello"},
        ],
    )
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Whole answer here."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 11 and completion.usage.completion_tokens == 4
    # the earlier turns are the conversation's past; the system message its context
    assert _sent(nexus) == [("user", "Earlier question"), ("assistant", "Earlier answer"), ("user", "Hello")]
    assert "Answer briefly." in _chats(nexus)[-1].json["messages"][0]["content"]
    conversation = raw.headers["X-Conversation-Id"]
    assert [m["content"] for m in nexus.agent_messages(conversation)][-1] == "Whole answer here."

    chunks = list(
        client.chat.completions.create(
            model=agent["id"],
            messages=[{"role": "user", "content": "Stream it"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Streamed in five pieces."
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


def test_a_client_tool_call_ends_the_completion_and_the_next_request_answers_it(nexus, agent, key):
    call = FakeToolCall(name="get_weather", arguments={"city": "Oslo"}, id="call_oslo_v1")
    nexus.fake.script(Reply(text="", tool_calls=(call,)), Reply(text="Cold in Oslo."))
    client = _client(nexus, key)
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    chunks = list(
        client.chat.completions.create(model=agent["id"], messages=messages, tools=[WEATHER], stream=True)
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(tc.id, tc.function.name, json.loads(tc.function.arguments)) for tc in calls] == [
        ("call_oslo_v1", "get_weather", {"city": "Oslo"})
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    offered = _chats(nexus)[-1].json["tools"]
    assert [t["function"]["name"] for t in offered] == ["get_weather"]

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_oslo_v1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_oslo_v1", "content": '{"temp": -3}'},
    ]
    answer = client.chat.completions.create(model=agent["id"], messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content == "Cold in Oslo."
    assert answer.choices[0].finish_reason == "stop"
    (tool_message,) = [m for m in _chats(nexus)[-1].json["messages"] if m["role"] == "tool"]
    assert json.loads(tool_message["content"]) == {"result": {"temp": -3}, "is_error": False}
    assert len(_chats(nexus)) == 2  # one run: the answer continued it

    # non-streamed, the call is in the message
    nexus.fake.script(
        Reply(text="", tool_calls=(FakeToolCall(name="get_weather", arguments={"city": "Rome"}),))
    )
    whole = client.chat.completions.create(
        model=agent["id"], messages=[{"role": "user", "content": "Rome?"}], tools=[WEATHER]
    )
    assert whole.choices[0].finish_reason == "tool_calls"
    assert whole.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_the_async_sdk_streams_chat_and_responses(nexus, agent, key):
    nexus.fake.script(
        Reply(text="Async whole."),
        Reply(text="Async chat reply."),
        Reply(text="Async responses reply."),
        Reply(text="Async whole response."),
    )

    async def main() -> tuple[str, list[str], str]:
        client = _aclient(nexus, key)
        whole = await client.chat.completions.create(
            model=agent["id"], messages=[{"role": "user", "content": "Hi"}]
        )
        assert whole.choices[0].message.content == "Async whole."
        stream = await client.chat.completions.create(
            model=agent["id"], messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        events = await client.responses.create(model=agent["id"], input="Hi again", stream=True)
        kinds, deltas = [], []
        async for event in events:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        response = await client.responses.create(model=agent["id"], input="Whole, please")
        assert response.output_text == "Async whole response."
        await client.close()
        return text, kinds, "".join(deltas)

    text, kinds, deltas = asyncio.run(main())
    assert text == "Async chat reply."
    assert deltas == "Async responses reply."
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"


def test_responses_whole_streamed_and_continued_with_previous_response_id(nexus, agent, key):
    client = _client(nexus, key)
    nexus.fake.script(Reply(text="First reply.", usage=(9, 2)), Reply(text="Second reply.", chunks=4))
    first = client.responses.create(model=agent["id"], input="Remember 42.", instructions="Be terse.")
    assert first.status == "completed" and first.output_text == "First reply."
    assert first.id.startswith("resp_") and first.usage.input_tokens == 9
    assert "Be terse." in _chats(nexus)[-1].json["messages"][0]["content"]

    events = list(
        client.responses.create(
            model=agent["id"], input="What number?", previous_response_id=first.id, stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    for expected in (
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Second reply."
    done = events[-1].response
    assert done.output_text == "Second reply." and done.previous_response_id == first.id
    # the same conversation: the provider saw the first turn
    assert _sent(nexus) == [
        ("user", "Remember 42."),
        ("assistant", "First reply."),
        ("user", "What number?"),
    ]
    # read back
    stored = client.responses.retrieve(done.id)
    assert stored.status == "completed" and stored.output_text == "Second reply."
    # the SDK's stream helper agrees on the events
    nexus.fake.script(Reply(text="Helper reply."))
    with client.responses.stream(model=agent["id"], input="Once more") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Helper reply."


def test_responses_function_call_and_its_output(nexus, agent, key):
    call = FakeToolCall(name="get_weather", arguments={"city": "Paris"}, id="call_paris_v1")
    nexus.fake.script(Reply(text="Let me check.", tool_calls=(call,)), Reply(text="Sunny in Paris."))
    client = _client(nexus, key)
    tool = {"type": "function", **WEATHER["function"]}
    first = client.responses.create(model=agent["id"], input="Weather in Paris?", tools=[tool])
    assert [item.type for item in first.output] == ["message", "function_call"]
    fc = first.output[1]
    assert fc.call_id == "call_paris_v1" and json.loads(fc.arguments) == {"city": "Paris"}
    second = client.responses.create(
        model=agent["id"],
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "Sunny"}],
        tools=[tool],
    )
    assert second.output_text == "Sunny in Paris." and second.id != first.id

    # streamed, through the SDK's helper: the call's events, then its output continues the run
    call = FakeToolCall(name="get_weather", arguments={"city": "Rome"}, id="call_rome_v1")
    nexus.fake.script(Reply(text="", tool_calls=(call,)), Reply(text="Warm in Rome."))
    with client.responses.stream(model=agent["id"], input="Weather in Rome?", tools=[tool]) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    assert "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    (fc,) = [item for item in streamed.output if item.type == "function_call"]
    assert fc.call_id == "call_rome_v1" and json.loads(fc.arguments) == {"city": "Rome"}
    with client.responses.stream(
        model=agent["id"],
        previous_response_id=streamed.id,
        input=[{"type": "function_call_output", "call_id": fc.call_id, "output": "Warm"}],
        tools=[tool],
    ) as stream:
        assert stream.get_final_response().output_text == "Warm in Rome."
    with pytest.raises(openai.BadRequestError) as failure:
        client.responses.create(
            model=agent["id"], input=[{"type": "function_call_output", "call_id": "x", "output": "1"}]
        )
    assert failure.value.body["param"] == "previous_response_id"


def test_a_dropped_stream_does_not_stop_the_run_and_the_reply_reads_back(nexus, agent, key):
    words = " ".join(f"w{i}" for i in range(40))
    nexus.fake.script(Reply(text=words, tokens_per_s=40))
    client = _client(nexus, key)
    stream = client.responses.create(model=agent["id"], input="Go", stream=True)
    response_id = None
    for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        if event.type == "response.output_text.delta":
            break
    stream.close()  # hang up mid-reply
    assert response_id
    deadline = time.monotonic() + 20
    stored = client.responses.retrieve(response_id)
    while stored.status != "completed" and time.monotonic() < deadline:
        time.sleep(0.2)
        stored = client.responses.retrieve(response_id)
    assert stored.status == "completed" and stored.output_text == words
    # another user's response is not theirs to read
    with pytest.raises(openai.NotFoundError):
        _client(nexus, _key(nexus, "operator")["key"]).responses.retrieve(response_id)


def test_a_v1_run_is_an_ordinary_run_stopped_by_the_normal_stop(nexus, agent):
    nexus.fake.script(Reply(text=" ".join(f"w{i}" for i in range(200)), tokens_per_s=20))
    with nexus.api() as api:
        token = api.headers["Authorization"].removeprefix("Bearer ")
    client = _client(nexus, token)  # a JWT works as the key
    with client.chat.completions.with_streaming_response.create(
        model=agent["id"], messages=[{"role": "user", "content": "On and on"}], stream=True
    ) as response:
        conversation = response.headers["X-Conversation-Id"]
        chunks = []
        stopped = False
        for chunk in response.parse():
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content and not stopped:
                with nexus.api() as api:
                    stop = api.post(f"conversations/{conversation}/stop/")
                assert stop.status_code == 200 and stop.json()["count"] == 1, stop.text
                stopped = True
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert nexus.agent_messages(conversation)[-1]["status"] == "stopped"


def test_bad_requests_are_openai_errors(nexus, agent, key):
    client = _client(nexus, key)
    for kwargs, param in (
        ({"messages": [{"role": "user", "content": "Hi"}], "n": 2}, "n"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "assistant", "content": "only me"}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages.0",
        ),
    ):
        with pytest.raises(openai.BadRequestError) as failure:
            client.chat.completions.create(model=agent["id"], **kwargs)
        body = failure.value.body
        assert body["type"] == "invalid_request_error" and body["param"] == param, body
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=str(uuid.uuid4()), messages=[{"role": "user", "content": "Hi"}])
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    for raw in (b"{not json", b"[]"):
        response = httpx.post(f"{nexus.url}/v1/chat/completions", content=raw, headers=headers)
        assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"
    response = httpx.get(f"{nexus.url}/v1/nothing-here", headers=headers)
    assert response.status_code == 404 and "error" in response.json()
    # a provider that fails: the run's error, in OpenAI's shape, and no retry asked for
    nexus.fake.script(Reply(status=401, error_message="bad key upstream"))
    with pytest.raises(openai.APIStatusError) as failure:
        client.chat.completions.create(model=agent["id"], messages=[{"role": "user", "content": "Hi"}])
    assert failure.value.status_code == 502 and failure.value.body["code"] == "provider_error"
    assert failure.value.response.headers["x-should-retry"] == "false"
    # streamed, the failure is the stream's last event: the SDK raises it
    nexus.fake.script(Reply(status=401, error_message="bad key upstream"))
    stream = client.chat.completions.create(
        model=agent["id"], messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    with pytest.raises(openai.APIError) as failure:
        list(stream)
    assert failure.value.body["code"] == "provider_error"
    # a response fails as a response: status failed, with the run's error
    nexus.fake.script(Reply(status=401, error_message="bad key upstream"))
    failed = client.responses.create(model=agent["id"], input="Hi")
    assert failed.status == "failed" and failed.error.code == "provider_error"
