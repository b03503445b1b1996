"""Seed 002 as its own client speaks it (docs/dialects.md, "Seed 002"): the ``/api/conversation/*``
family in the ``{code, message, data}`` envelope and ``POST /api/agent/run`` over SSE, against a
real daphne (embedded topology: runs inline, a private SQLite file) and a loopback fake OpenAI
server reached through the real ``openai`` SDK. Paths as the seed writes them (no trailing slash),
the JWT bearer on every request (the seed shows no auth: docs/dialects.md)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from tests.fakes import FakeServerProcess, Reply
from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ITEM_FIELDS = {"conversation_id", "conversation_title", "create_time", "update_time"}
HISTORY_FIELDS = {"role", "message", "message_id", "opinion_flag", "picture", "search"}


@pytest.fixture(scope="module")
def fake():
    with FakeServerProcess("openai") as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("seed002"), None)
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


class Client:
    """Seed 002's client: JSON bodies, the envelope, a bearer token."""

    def __init__(self, http: httpx.AsyncClient, token: str | None) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def call(self, method: str, path: str, body: dict | None = None, status: int = 200) -> dict:
        response = await self.http.request(method, path, json=body, headers=self.headers)
        assert response.status_code == status, response.text
        envelope = response.json()
        assert set(envelope) >= {"code", "message", "data"}, envelope
        if status == 200:
            assert envelope["code"] == 0 and envelope["message"] == "success", envelope
        else:
            assert envelope["code"] == status and envelope["data"] is None, envelope
            assert isinstance(envelope["message"], str) and envelope["message"], envelope
        return envelope

    async def data(self, method: str, path: str, body: dict | None = None):
        return (await self.call(method, path, body))["data"]

    async def run(self, body: dict, *, stop_after: str | None = None) -> list[dict]:
        """``POST /api/agent/run``: the stream's messages (``data:`` lines), until it ends or
        until the first message of type ``stop_after`` (then the client hangs up)."""
        messages: list[dict] = []
        async with self.http.stream("POST", "/api/agent/run", json=body, headers=self.headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            buffer = ""
            async for text in response.aiter_text():
                buffer += text
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    data = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
                    if data:
                        messages.append(json.loads(data[0]))
                        if stop_after and messages[-1]["type"] == stop_after:
                            return messages
        return messages


async def _user(cluster: Cluster, fake: FakeServerProcess, *models: tuple[str, str]) -> tuple[int, Client]:
    """A fresh user with OpenAI agents ``(name, model)`` on the fake server, and their client."""
    user, token = await cluster.user()
    for name, model in models:
        await cluster.db.acall(
            "agent",
            owner_id=user,
            provider="openai",
            model=model,
            config={},
            base_url=fake.base_url,
            name=name,
        )
    http = httpx.AsyncClient(base_url=cluster.http(0), timeout=httpx.Timeout(30, read=60))
    return user, Client(http, token)


def _assert_epoch_ms(value, before: float) -> None:
    assert isinstance(value, int), value
    assert before * 1000 - 5000 <= value <= time.time() * 1000 + 5000, value


def _assert_item(item: dict, *, conversation_id: str, title: str, before: float) -> None:
    assert set(item) == ITEM_FIELDS, item
    assert item["conversation_id"] == conversation_id
    assert item["conversation_title"] == title
    _assert_epoch_ms(item["create_time"], before)
    _assert_epoch_ms(item["update_time"], before)
    assert item["update_time"] >= item["create_time"]


async def _history(client: Client, conversation_id: str) -> dict:
    data = await client.data("GET", f"/api/conversation/{conversation_id}")
    assert set(data) == {"conversation_id", "create_time", "message"}, data
    assert data["conversation_id"] == conversation_id
    for item in data["message"]:
        assert set(item) == HISTORY_FIELDS, item
        assert item["picture"] == [] and item["search"] == []
    return data


async def _native_reply(client: Client, conversation_id: str) -> dict:
    """The first ``agent_message`` of the conversation's native SSE stream, replayed from its start."""
    path = f"/api/conversations/{conversation_id}/events/?after_seq=0"
    async with client.http.stream("GET", path, headers=client.headers) as response:
        assert response.status_code == 200
        buffer = ""
        async for text in response.aiter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                for line in block.split("\n"):
                    if line.startswith("data: "):
                        frame = json.loads(line[len("data: ") :])
                        if frame["type"] == "agent_message":
                            return frame["data"]
    raise AssertionError("the native stream ended without the reply")


async def test_create_list_rename_history_and_delete(cluster, fake):
    _, client = await _user(cluster, fake, ("Helper", "gpt-4o-mini"))
    async with client.http:
        before = time.time()
        created = await client.data("PUT", "/api/conversation/create", {"title": "Trip plans"})
        conversation_id = created["conversation_id"]
        assert str(uuid.UUID(conversation_id)) == conversation_id
        _assert_item(created, conversation_id=conversation_id, title="Trip plans", before=before)
        other = await client.data("PUT", "/api/conversation/create", {"title": "Later one"})

        listed = await client.data("GET", "/api/conversation/list")
        assert [item["conversation_id"] for item in listed] == [other["conversation_id"], conversation_id]
        _assert_item(listed[1], conversation_id=conversation_id, title="Trip plans", before=before)
        assert listed[1]["create_time"] == created["create_time"]

        renamed = await client.call(
            "POST",
            "/api/conversation/rename",
            {"conversation_id": conversation_id, "name": "Spring in Paris"},
        )
        assert renamed["data"] is True
        listed = await client.data("GET", "/api/conversation/list")
        mine = next(item for item in listed if item["conversation_id"] == conversation_id)
        _assert_item(mine, conversation_id=conversation_id, title="Spring in Paris", before=before)

        history = await _history(client, conversation_id)
        assert history["message"] == []
        assert history["create_time"] == created["create_time"]

        assert (await client.call("DELETE", f"/api/conversation/{conversation_id}"))["data"] is True
        gone = await client.call("GET", f"/api/conversation/{conversation_id}", status=404)
        assert gone["error"] == "not_found"
        listed = await client.data("GET", "/api/conversation/list")
        assert [item["conversation_id"] for item in listed] == [other["conversation_id"]]
        await client.call("DELETE", f"/api/conversation/{conversation_id}", status=404)


async def test_agent_run_streams_the_reply_which_is_then_in_the_history(cluster, fake):
    _, client = await _user(cluster, fake, ("Helper", "gpt-4o-mini"))
    text = "Paris is lovely in spring, mild and green."
    async with client.http:
        conversation_id = (await client.data("PUT", "/api/conversation/create", {"title": "Paris"}))[
            "conversation_id"
        ]
        await asyncio.to_thread(fake.script, Reply(text=text, chunks=5, tokens_per_s=20))
        messages = await client.run(
            {
                "query": "When should I visit Paris?",
                "history": [],
                "minio_files": [],
                "conversation_id": conversation_id,
            }
        )
        head = messages[0]
        assert head["type"] == "conversation"
        assert head["content"]["conversation_id"] == conversation_id
        run_id = head["content"]["run_id"]
        outputs = [m for m in messages if m["type"] == "model_output"]
        assert len(outputs) >= 2 and all(isinstance(m["content"], str) for m in outputs)
        assert "".join(m["content"] for m in outputs) == text
        (final,) = [m for m in messages if m["type"] == "final_answer"]
        assert final["content"] == text
        assert messages[-1] == {
            "type": "done",
            "content": {
                "run_id": run_id,
                "status": "completed",
                "message_id": final["message_id"],
                "error": None,
            },
        }
        assert {m["type"] for m in messages} == {"conversation", "model_output", "final_answer", "done"}
        sent = (await asyncio.to_thread(lambda: fake.requests))[-1].json
        assert sent["messages"][-1] == {"role": "user", "content": "When should I visit Paris?"}

        history = (await _history(client, conversation_id))["message"]
        assert [(m["role"], m["message"]) for m in history] == [
            ("user", [{"type": "query", "content": "When should I visit Paris?"}]),
            ("assistant", [{"type": "final_answer", "content": text}]),
        ]
        assert history[0]["message_id"] == head["content"]["message_id"]
        assert history[1]["message_id"] == final["message_id"]
        assert [m["opinion_flag"] for m in history] == [None, None]

        # an ordinary run: the native stream of the conversation has the same reply
        native = await _native_reply(client, conversation_id)
        assert native["messageId"] == final["message_id"] and native["content"] == text

        reply_id = final["message_id"]
        for opinion, flag in (("Y", "Y"), ("N", "N"), (None, None)):
            answer = await client.call(
                "POST",
                "/api/conversation/message/update_opinion",
                {"message_id": reply_id, "opinion": opinion},
            )
            assert answer["data"] is True
            history = (await _history(client, conversation_id))["message"]
            assert history[1]["opinion_flag"] == flag
        bad = await client.call(
            "POST",
            "/api/conversation/message/update_opinion",
            {"message_id": reply_id, "opinion": "maybe"},
            status=400,
        )
        assert bad["error"] == "validation_error", bad

        sources = await client.data(
            "POST",
            "/api/conversation/sources",
            {"conversation_id": conversation_id, "message_id": reply_id, "type": "all"},
        )
        assert sources == {"searches": [], "images": []}

        await asyncio.to_thread(fake.script, Reply(text='"Visiting Paris in spring."'))
        title = await client.data(
            "POST",
            "/api/conversation/generate_title",
            {
                "conversation_id": conversation_id,
                "history": [
                    {"role": "user", "content": "When should I visit Paris?"},
                    {"role": "assistant", "content": text},
                ],
            },
        )
        assert title == "Visiting Paris in spring"
        listed = await client.data("GET", "/api/conversation/list")
        assert listed[0]["conversation_id"] == conversation_id
        assert listed[0]["conversation_title"] == title


async def test_agent_run_without_a_conversation_uses_the_default_agent_and_the_history(cluster, fake):
    # the default agent: the first active agent of the user's own, by name
    _, client = await _user(cluster, fake, ("Zed", "gpt-zed"), ("Alpha", "gpt-alpha"))
    async with client.http:
        await asyncio.to_thread(fake.script, Reply(text="Forty-two.", chunks=2))
        history = [
            {"role": "user", "content": "Remember the number 42."},
            {"role": "assistant", "content": "Noted."},
        ]
        messages = await client.run({"query": "Which number?", "history": history, "minio_files": []})
        conversation_id = messages[0]["content"]["conversation_id"]
        assert "".join(m["content"] for m in messages if m["type"] == "model_output") == "Forty-two."
        assert messages[-1]["type"] == "done" and messages[-1]["content"]["status"] == "completed"
        sent = (await asyncio.to_thread(lambda: fake.requests))[-1].json
        assert sent["model"] == "gpt-alpha"
        assert [m["content"] for m in sent["messages"] if m["role"] != "system"] == [
            "Remember the number 42.",
            "Noted.",
            "Which number?",
        ]
        stored = (await _history(client, conversation_id))["message"]
        assert [m["role"] for m in stored] == ["user", "assistant", "user", "assistant"]
        assert stored[-1]["message"] == [{"type": "final_answer", "content": "Forty-two."}]
        listed = await client.data("GET", "/api/conversation/list")
        assert [item["conversation_id"] for item in listed] == [conversation_id]


async def test_a_dropped_stream_does_not_stop_the_run(cluster, fake):
    _, client = await _user(cluster, fake, ("Helper", "gpt-4o-mini"))
    reply = Reply.words(60, tokens_per_s=40)  # about a second and a half
    async with client.http:
        conversation_id = (await client.data("PUT", "/api/conversation/create", {"title": "Long"}))[
            "conversation_id"
        ]
        await asyncio.to_thread(fake.script, reply)
        seen = await client.run(
            {"query": "Count.", "history": [], "minio_files": [], "conversation_id": conversation_id},
            stop_after="model_output",
        )
        assert seen[-1]["type"] == "model_output"
        deadline = time.monotonic() + 30
        while True:
            stored = (await _history(client, conversation_id))["message"]
            if len(stored) == 2 and stored[1]["message"][0]["content"] == reply.text:
                break
            assert time.monotonic() < deadline, stored
            await asyncio.sleep(0.3)
        request = (await asyncio.to_thread(lambda: fake.requests))[-1]
        assert not request.client_closed, "the provider's stream was cut when the client left"


async def test_errors_answer_in_the_envelope(cluster, fake):
    _, client = await _user(cluster, fake, ("Helper", "gpt-4o-mini"))
    _, stranger = await _user(cluster, fake, ("Theirs", "gpt-4o-mini"))
    _, agentless = await _user(cluster, fake)
    async with client.http, stranger.http, agentless.http:
        anonymous = Client(client.http, None)
        refused = await anonymous.call("GET", "/api/conversation/list", status=401)
        assert refused["error"] == "not_authenticated"
        forged = Client(client.http, "not-a-token")
        await forged.call("PUT", "/api/conversation/create", {"title": "x"}, status=401)
        await anonymous.call("POST", "/api/agent/run", {"query": "hi"}, status=401)

        conversation_id = (await client.data("PUT", "/api/conversation/create", {"title": "Mine"}))[
            "conversation_id"
        ]
        # another user's conversation does not exist for them
        for method, path, body in (
            ("GET", f"/api/conversation/{conversation_id}", None),
            ("DELETE", f"/api/conversation/{conversation_id}", None),
            ("POST", "/api/conversation/rename", {"conversation_id": conversation_id, "name": "Taken"}),
            ("POST", "/api/conversation/sources", {"conversation_id": conversation_id}),
            ("POST", "/api/conversation/generate_title", {"conversation_id": conversation_id}),
            ("POST", "/api/agent/run", {"query": "hi", "conversation_id": conversation_id}),
        ):
            answer = await stranger.call(method, path, body, status=404)
            assert answer["error"] == "not_found", (path, answer)
        assert (await stranger.data("GET", "/api/conversation/list")) == []
        for bad_id in ("123", str(uuid.uuid4())):
            await client.call("GET", f"/api/conversation/{bad_id}", status=404)
            await client.call(
                "POST",
                "/api/agent/run",
                {"query": "hi", "conversation_id": bad_id},
                status=400 if bad_id == "123" else 404,
            )

        missing = await client.call("POST", "/api/agent/run", {"history": []}, status=400)
        assert missing["error"] == "validation_error" and "query" in missing["details"]
        files = await client.call(
            "POST", "/api/agent/run", {"query": "hi", "minio_files": "a.txt"}, status=400
        )
        assert "minio_files" in files["details"]
        await client.call(
            "POST", "/api/conversation/rename", {"conversation_id": conversation_id}, status=400
        )
        await client.call("POST", "/api/conversation/rename", {"name": "No id"}, status=400)
        empty = await client.call(
            "POST", "/api/conversation/generate_title", {"conversation_id": conversation_id}, status=400
        )
        assert empty["error"] == "validation_error"
        await client.call(
            "POST",
            "/api/conversation/sources",
            {"conversation_id": conversation_id, "type": "video"},
            status=400,
        )
        await client.call(
            "POST",
            "/api/conversation/message/update_opinion",
            {"message_id": str(uuid.uuid4()), "opinion": "Y"},
            status=404,
        )
        wrong_method = await client.call("GET", "/api/conversation/create", status=405)
        assert wrong_method["error"] == "method_not_allowed"
        response = await client.http.post(
            "/api/conversation/rename", content=b"{not json", headers=client.headers
        )
        assert response.status_code == 400 and response.json()["code"] == 400

        no_agent = await agentless.call("PUT", "/api/conversation/create", {"title": "x"}, status=400)
        assert "agent_id" in no_agent["details"]
        await agentless.call("POST", "/api/agent/run", {"query": "hi"}, status=400)
        assert (await client.data("GET", "/api/conversation/list"))[0]["conversation_title"] == "Mine"
