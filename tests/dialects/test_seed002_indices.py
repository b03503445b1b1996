"""Seed 002's knowledge paths as its own client speaks them (docs/knowledge.md, "Seed 002 paths"):
``/api/indices*`` over the user's knowledge bases, ``POST /api/file/preprocess`` over SSE, the
stored sources of a reply (``/api/conversation/sources``) and files attached to a run
(``minio_files``, and the native ``attachments``), against a real daphne (embedded topology, a
private SQLite file) and a loopback fake OpenAI server that records what the model was sent."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.fakes import FakeServerProcess, Reply
from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))
HANDBOOK = [
    ("Holidays", "Every employee has twenty-five days of paid holiday a year.", "docs/holidays.md"),
    ("Bicycles", "The office keeps a bicycle shed behind the kitchen, locked at night.", "docs/bikes.md"),
    ("Lunch", "Lunch is served at noon in the canteen on the second floor.", "docs/lunch.md"),
]


@pytest.fixture(scope="module")
def fake():
    with FakeServerProcess("openai") as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("seed002-indices"), None)
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


async def _client(cluster: Cluster) -> tuple[int, httpx.AsyncClient]:
    user, token = await cluster.user()
    client = httpx.AsyncClient(
        base_url=cluster.http(0),
        headers={"Authorization": f"Bearer {token}"},
        timeout=httpx.Timeout(30, read=60),
    )
    return user, client


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"], body
    return body


async def _handbook(cluster: Cluster, user: int, base: str = "handbook") -> None:
    for title, text, source in HANDBOOK:
        made = await cluster.db.acall(
            "kb_document", owner_id=user, base=base, text=text, title=title, source=source
        )
        assert made["status"] == "ready" and made["chunks"] >= 1, made


def _sse(raw: str) -> list[dict]:
    return [
        json.loads(line[len("data: ") :])
        for block in raw.split("\n\n")
        for line in block.split("\n")
        if line.startswith("data: ")
    ]


async def test_create_list_info_search_and_delete(cluster):
    user, client = await _client(cluster)
    async with client:
        created = await client.post("/api/indices/handbook", params={"embedding_dim": 256})
        assert created.status_code == 200, created.text
        body = created.json()
        assert (
            body["status"] == "success" and isinstance(body["message"], str) and body["embedding_dim"] == 256
        )
        # the seed's other form: POST /api/indices/ with index_name as a parameter
        other = await client.post("/api/indices/", params={"index_name": "notes"})
        assert other.status_code == 200 and other.json()["embedding_dim"] == 256, other.text
        _error(await client.post("/api/indices/handbook"), 409, "conflict")
        _error(
            await client.post("/api/indices/wide", params={"embedding_dim": 1024}), 400, "validation_error"
        )
        _error(
            await client.post("/api/indices/wide", params={"embedding_dim": "many"}), 400, "validation_error"
        )
        _error(await client.post("/api/indices/"), 400, "validation_error")

        await _handbook(cluster, user)

        listed = (await client.get("/api/indices")).json()
        assert listed == {"indices": ["handbook", "notes"], "count": 2}
        stats = (
            await client.get("/api/indices", params={"pattern": "hand*", "include_stats": "true"})
        ).json()
        assert stats["indices"] == ["handbook"] and stats["count"] == 1
        [info] = stats["indices_info"]
        assert info["name"] == "handbook" and info["stats"]["docs"] == 3
        assert isinstance(info["stats"]["size"], str) and info["stats"]["size"].endswith("kb")

        detail = (await client.get("/api/indices/handbook/info", params={"include_chunks": "true"})).json()
        assert {"base_info", "search_performance", "fields", "files"} <= set(detail)
        assert detail["base_info"]["docs"] == 3 and isinstance(detail["base_info"]["size"], str)
        assert set(detail["search_performance"]) == {"query_time", "hits"}
        assert detail["search_performance"]["hits"] == 3
        assert all(isinstance(v, dict) and "type" in v for v in detail["fields"].values())
        files = {f["path_or_url"]: f for f in detail["files"]}
        assert set(files) == {source for _, _, source in HANDBOOK}
        bikes = files["docs/bikes.md"]
        assert {"path_or_url", "file", "file_size", "create_time", "status", "chunks", "chunks_count"} <= set(
            bikes
        )
        assert bikes["status"] == "ready" and bikes["chunks_count"] == 1
        [chunk] = bikes["chunks"]
        assert set(chunk) == {"id", "title", "content", "create_time"} and "bicycle shed" in chunk["content"]
        bare = (await client.get("/api/indices/handbook/info", params={"include_files": "false"})).json()
        assert "files" not in bare
        no_chunks = (await client.get("/api/indices/handbook/info")).json()
        assert all("chunks" not in f for f in no_chunks["files"])

        for mode in ("accurate", "semantic", "hybrid"):
            found = await client.post(
                f"/api/indices/search/{mode}",
                json={
                    "query": "bicycle shed",
                    "index_names": ["handbook", "notes"],
                    "top_k": 2,
                    "weight_accurate": 0.6,
                },
            )
            assert found.status_code == 200, found.text
            answer = found.json()
            assert set(answer) == {"results", "total", "query_time_ms"}
            assert answer["total"] == len(answer["results"]) and 1 <= answer["total"] <= 2
            assert isinstance(answer["query_time_ms"], int | float)
            best = answer["results"][0]
            assert {"id", "title", "content", "score", "index"} <= set(best), best
            assert best["index"] == "handbook" and "bicycle shed" in best["content"], (mode, answer)
            assert best["id"] == chunk["id"]
            if mode == "hybrid":
                assert set(best["score_details"]) == {"accurate", "semantic"}
                assert best["score_details"]["accurate"] > 0 and best["score_details"]["semantic"] > 0
            else:
                assert "score_details" not in best

        bad = [
            ({"index_names": ["handbook"]}, 400),
            ({"query": "x", "index_names": []}, 400),
            ({"query": "x", "index_names": ["handbook"], "top_k": 0}, 400),
            ({"query": "x", "index_names": ["handbook"], "top_k": "5"}, 400),
            ({"query": "x", "index_names": ["handbook"], "weight_accurate": 2}, 400),
        ]
        for payload, status in bad:
            _error(await client.post("/api/indices/search/hybrid", json=payload), status, "validation_error")
        _error(
            await client.post("/api/indices/search/fuzzy", json={"query": "x", "index_names": ["handbook"]}),
            400,
            "validation_error",
        )
        _error(
            await client.post(
                "/api/indices/search/accurate", json={"query": "x", "index_names": ["nowhere"]}
            ),
            404,
            "not_found",
        )
        _error(await client.get("/api/indices/search/accurate"), 405, "method_not_allowed")

        health = (await client.get("/api/indices/health")).json()
        assert health == {"status": "healthy", "elasticsearch": "connected", "indices_count": 2}

        _error(
            await client.request("DELETE", "/api/indices/handbook/documents", json={}),
            400,
            "validation_error",
        )
        deleted = await client.request(
            "DELETE", "/api/indices/handbook/documents", json={"path_or_url": "docs/bikes.md"}
        )
        assert deleted.status_code == 200 and deleted.json() == {"status": "success", "deleted_count": 1}
        again = await client.request(
            "DELETE", "/api/indices/handbook/documents", params={"path_or_url": "docs/bikes.md"}
        )
        assert again.json() == {"status": "success", "deleted_count": 0}
        after = (
            await client.post(
                "/api/indices/search/accurate", json={"query": "bicycle shed", "index_names": ["handbook"]}
            )
        ).json()
        assert all("bicycle" not in r["content"] for r in after["results"])
        assert (await client.get("/api/indices/handbook/info")).json()["base_info"]["docs"] == 2

        gone = await client.delete("/api/indices/handbook")
        assert (
            gone.status_code == 200
            and gone.json()["status"] == "success"
            and isinstance(gone.json()["message"], str)
        )
        _error(await client.get("/api/indices/handbook/info"), 404, "not_found")
        _error(await client.delete("/api/indices/handbook"), 404, "not_found")
        by_param = await client.request("DELETE", "/api/indices/", params={"index_name": "notes"})
        assert by_param.status_code == 200, by_param.text
        assert (await client.get("/api/indices")).json() == {"indices": [], "count": 0}


async def test_another_users_indices_do_not_exist_for_the_caller(cluster):
    owner, mine = await _client(cluster)
    _, theirs = await _client(cluster)
    async with mine, theirs:
        assert (await mine.post("/api/indices/private")).status_code == 200
        await _handbook(cluster, owner, base="private")
        # the other user may use the same name for a base of their own
        assert (await theirs.post("/api/indices/private")).status_code == 200
        assert (await theirs.get("/api/indices", params={"include_stats": "true"})).json()[
            "indices_info"
        ] == [{"name": "private", "stats": {"docs": 0, "size": "0b"}}]
        searched = await theirs.post(
            "/api/indices/search/accurate", json={"query": "holiday", "index_names": ["private"]}
        )
        assert searched.json()["total"] == 0  # their own empty base, never the owner's
        _, third = await _client(cluster)
        async with third:
            assert (await third.get("/api/indices")).json() == {"indices": [], "count": 0}
            _error(await third.get("/api/indices/private/info"), 404, "not_found")
            _error(await third.delete("/api/indices/private"), 404, "not_found")
            _error(
                await third.request(
                    "DELETE", "/api/indices/private/documents", json={"path_or_url": "docs/lunch.md"}
                ),
                404,
                "not_found",
            )
            _error(
                await third.post(
                    "/api/indices/search/semantic", json={"query": "lunch", "index_names": ["private"]}
                ),
                404,
                "not_found",
            )
            assert (await third.get("/api/indices/health")).json()["indices_count"] == 0
        assert (await mine.get("/api/indices/private/info")).json()["base_info"]["docs"] == 3
        # a base may be named "search": its paths are its own beside the search paths
        assert (await mine.post("/api/indices/search")).status_code == 200
        assert (await mine.get("/api/indices/search/info")).json()["base_info"]["name"] == "search"
        assert (await mine.delete("/api/indices/search")).status_code == 200
    async with httpx.AsyncClient(base_url=cluster.http(0), timeout=30) as nobody:
        _error(await nobody.get("/api/indices"), 401, "not_authenticated")


async def test_preprocess_streams_each_files_text(cluster):
    _, client = await _client(cluster)
    async with client:
        html = (
            b"<html><head><title>Menu</title></head><body><h1>Menu</h1><p>Soup of the day.</p></body></html>"
        )
        response = await client.post(
            "/api/file/preprocess",
            data={"query": "what is for lunch?"},
            files=[
                ("files", ("notes.txt", b"Lunch is at noon.", "text/plain")),
                ("files", ("menu.html", html, "text/html")),
                ("files", ("tool.txt", ELF, "text/plain")),  # a program calling itself text
            ],
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse(response.text)
        assert events[0] == {
            "type": "start",
            "query": "what is for lunch?",
            "files": ["notes.txt", "menu.html", "tool.txt"],
        }
        assert events[-1] == {"type": "complete", "processed": 2, "failed": 1}
        text = {}
        for event in events:
            if event["type"] == "content":
                text[event["filename"]] = text.get(event["filename"], "") + event["content"]
        assert text["notes.txt"] == "Lunch is at noon."
        assert "Soup of the day." in text["menu.html"] and "<p>" not in text["menu.html"]
        [refused] = [e for e in events if e["type"] == "error"]
        assert refused["filename"] == "tool.txt" and refused["code"] == "unsupported_media_type"
        ends = [e for e in events if e["type"] == "file_end"]
        assert [e["filename"] for e in ends] == ["notes.txt", "menu.html"] and not any(
            e["truncated"] for e in ends
        )

        _error(await client.post("/api/file/preprocess", json={"query": "x"}), 400, "validation_error")
        _error(
            await client.post("/api/file/preprocess", data={"query": "x"}, files=[]), 400, "validation_error"
        )


async def _agent(cluster: Cluster, fake: FakeServerProcess, user: int) -> str:
    return await cluster.db.acall(
        "agent",
        owner_id=user,
        provider="openai",
        model="gpt-4o-mini",
        config={},
        base_url=fake.base_url,
        name="Helper",
    )


async def _run(client: httpx.AsyncClient, body: dict) -> list[dict]:
    async with client.stream("POST", "/api/agent/run", json=body) as response:
        assert response.status_code == 200, await response.aread()
        raw = (await response.aread()).decode()
    return _sse(raw)


async def test_sources_are_the_replys_stored_sources(cluster, fake):
    user, client = await _client(cluster)
    _, stranger = await _client(cluster)
    async with client, stranger:
        await _agent(cluster, fake, user)
        await asyncio.to_thread(fake.script, Reply(text="Twenty-five days."))
        messages = await _run(client, {"query": "How many holidays?", "history": []})
        head = messages[0]["content"]
        done = messages[-1]
        assert done["type"] == "done", messages
        reply_id = done["content"]["message_id"]
        source = {
            "title": "Holidays",
            "text": "Every employee has twenty-five days of paid holiday a year.",
            "source_type": "file",
            "url": "",
            "filename": "holidays.md",
            "published_date": "2026-01-02",
            "score": 0.9,
            "score_details": {"accurate": 1.5, "semantic": 0.7},
        }
        await cluster.db.acall(
            "message_metadata",
            message_id=reply_id,
            metadata={"sources": [source], "images": ["https://example.com/a.png"]},
        )

        async def sources(who: httpx.AsyncClient, body: dict, status: int = 200) -> dict:
            response = await who.post("/api/conversation/sources", json=body)
            assert response.status_code == status, response.text
            return response.json()

        answer = await sources(
            client, {"conversation_id": head["conversation_id"], "message_id": reply_id, "type": "all"}
        )
        assert answer["code"] == 0 and answer["message"] == "success"
        [search] = answer["data"]["searches"]
        assert search == {**source, "score_details": {"accuracy": 1.5, "semantic": 0.7}}
        assert answer["data"]["images"] == ["https://example.com/a.png"]
        only = await sources(
            client, {"conversation_id": head["conversation_id"], "message_id": reply_id, "type": "search"}
        )
        assert only["data"]["images"] == [] and len(only["data"]["searches"]) == 1
        whole = await sources(client, {"conversation_id": head["conversation_id"]})
        assert whole["data"]["searches"] == answer["data"]["searches"]
        # the query itself has none
        none = await sources(
            client, {"conversation_id": head["conversation_id"], "message_id": head["message_id"]}
        )
        assert none["data"] == {"searches": [], "images": []}
        # the history lists them with the reply
        history = (await client.get(f"/api/conversation/{head['conversation_id']}")).json()["data"]
        assert history["message"][-1]["search"] == answer["data"]["searches"]

        foreign = await sources(
            stranger, {"conversation_id": head["conversation_id"], "message_id": reply_id}, 404
        )
        assert foreign["code"] == 404 and foreign["error"] == "not_found" and foreign["data"] is None


async def test_minio_files_reach_the_model_and_are_stored_with_the_query(cluster, fake):
    user, client = await _client(cluster)
    other, stranger = await _client(cluster)
    async with client, stranger:
        agent_id = await _agent(cluster, fake, user)
        await _agent(cluster, fake, other)
        stored = await client.post(
            "/api/file/storage",
            files=[("files", ("minutes.txt", b"The budget for 2027 is 42 thousand euros.", "text/plain"))],
            data={"folder": "attachments"},
        )
        object_name = stored.json()["results"][0]["object_name"]
        assert object_name == "attachments/minutes.txt"

        await asyncio.to_thread(fake.script, Reply(text="42 thousand euros."))
        messages = await _run(
            client, {"query": "What is the budget?", "history": [], "minio_files": [object_name]}
        )
        assert messages[-1]["type"] == "done", messages
        head = messages[0]["content"]
        sent = (await asyncio.to_thread(lambda: fake.requests))[-1].json
        last_user = [m for m in sent["messages"] if m["role"] == "user"][-1]
        assert last_user["content"].startswith("What is the budget?")
        assert "The budget for 2027 is 42 thousand euros." in last_user["content"]
        assert 'name="minutes.txt"' in last_user["content"]
        query = await cluster.db.acall("message", message_id=head["message_id"])
        [ref] = query["metadata"]["attachments"]
        assert (
            ref["name"] == "minutes.txt"
            and ref["content_type"].startswith("text/plain")
            and ref["size"] == 41
        )
        assert set(ref) == {"file_id", "name", "content_type", "size"}

        # the next turn still carries the file's text with that message (the history is rebuilt)
        await asyncio.to_thread(fake.script, Reply(text="Yes."))
        follow = await _run(client, {"query": "Sure?", "conversation_id": head["conversation_id"]})
        assert follow[-1]["type"] == "done", follow
        sent = (await asyncio.to_thread(lambda: fake.requests))[-1].json
        users = [m["content"] for m in sent["messages"] if m["role"] == "user"]
        assert "42 thousand euros" in users[0] and users[-1] == "Sure?"

        # the native run takes stored file ids
        await asyncio.to_thread(fake.script, Reply(text="Noted."))
        async with client.stream(
            "POST",
            f"/api/agents/{agent_id}/run/",
            json={
                "query": "And this?",
                "conversation_id": head["conversation_id"],
                "attachments": [ref["file_id"]],
            },
        ) as response:
            assert response.status_code == 200, await response.aread()
            await response.aread()
        sent = (await asyncio.to_thread(lambda: fake.requests))[-1].json
        assert "42 thousand euros" in [m for m in sent["messages"] if m["role"] == "user"][-1]["content"]

        # a file that is not the caller's: 404, and nothing is sent
        count = len(await asyncio.to_thread(lambda: fake.requests))
        refused = await stranger.post("/api/agent/run", json={"query": "Peek", "minio_files": [object_name]})
        assert refused.status_code == 404, refused.text
        assert refused.json()["error"] == "not_found"
        bad = await client.post(
            "/api/agent/run", json={"query": "x", "minio_files": "attachments/minutes.txt"}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "validation_error"
        assert len(await asyncio.to_thread(lambda: fake.requests)) == count
