"""Ingest tasks end to end against a real daphne (embedded topology: inline tasks, the in-memory
channel layer, a private SQLite file): the REST API (every file type, dedupe, limits, another
user's base), progress over ``/ws/knowledge/`` and SSE, and seed 002's task paths as its client
speaks them (docs/knowledge.md "Tasks", docs/api.md "Knowledge")."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import threading

import httpx
import pytest

from tests.knowledge.test_extract import make_docx, make_pdf
from tests.realtime_procs.cluster import Cluster, Socket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PROSE = (
    "# Lighthouse keeping\n\nThe keeper trims the wick every evening before dusk. "
    "Fog signals sound every thirty seconds when visibility drops below two miles.\n\n"
    "## Supplies\n\nOil arrives by boat on the first Monday of each month.\n"
)
HTML = (
    b"<!doctype html><html lang='en'><head><title>Harbour rules</title></head><body>"
    b"<h1>Harbour rules</h1><p>Moor at the east quay. Pilots board at the outer buoy.</p></body></html>"
)
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))
MAX_FILE = 200_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(
        tmp_path_factory.mktemp("ktasks"),
        None,
        extra_env={"NEXUS_FILE_MAX_BYTES": str(MAX_FILE), "NEXUS_FILE_QUOTA_BYTES": str(3 * MAX_FILE)},
    )
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


async def _client(cluster: Cluster) -> tuple[httpx.AsyncClient, str]:
    _, token = await cluster.user()
    client = httpx.AsyncClient(
        base_url=cluster.http(0), headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(60)
    )
    return client, token


async def _sse_until_end(client: httpx.AsyncClient, task_id: str) -> list[dict]:
    frames = []
    async with client.stream("GET", f"/api/knowledge/tasks/{task_id}/events/") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                frames.append(json.loads(line[6:]))
    return frames


async def _base(client: httpx.AsyncClient, name: str, **extra) -> dict:
    made = await client.post("/api/knowledge/bases/", json={"name": name, **extra})
    assert made.status_code == 201, made.text
    return made.json()


async def test_every_file_type_through_the_rest_upload_with_sse_progress_and_search(cluster):
    client, _ = await _client(cluster)
    async with client:
        base = await _base(client, "manuals", chunk_strategy="headings")
        files = {
            "keeping.md": PROSE.encode(),
            "notes.txt": b"The tide table is posted by the harbour master at noon.",
            "rules.html": HTML,
            "lighthouse.pdf": make_pdf(),
            "manual.docx": make_docx(),
        }
        tasks = {}
        for name, data in files.items():
            added = await client.post(
                f"/api/knowledge/bases/{base['id']}/documents/", files={"file": (name, data)}
            )
            assert added.status_code == 201, added.text
            body = added.json()
            assert body["created"] is True and body["task"]["status"] in ("queued", "running", "done")
            tasks[name] = body["task"]["id"]
        for name, task_id in tasks.items():
            frames = await _sse_until_end(client, task_id)
            assert all(f["type"] == "task_progress" for f in frames)
            last = frames[-1]["task"]
            assert last["status"] == "done", (name, last)
            assert last["id"] == task_id and last["base"] == base["id"]
        documents = (await client.get(f"/api/knowledge/bases/{base['id']}/documents/")).json()
        assert len(documents) == 5
        assert {d["status"] for d in documents} == {"ready"}
        assert all(d["chunk_count"] > 0 and d["task"]["status"] == "done" for d in documents)

        # the same bytes again: the same document and task, nothing queued twice
        again = await client.post(
            f"/api/knowledge/bases/{base['id']}/documents/", files={"file": ("copy.md", PROSE.encode())}
        )
        assert again.status_code == 200, again.text
        assert again.json()["created"] is False and again.json()["task"]["id"] == tasks["keeping.md"]
        listed = (await client.get("/api/knowledge/tasks/", params={"base": base["id"]})).json()
        assert len(listed) == 5

        found = await client.post(
            "/api/knowledge/search/",
            json={"bases": [base["id"]], "query": "fog signals visibility", "mode": "hybrid", "top_k": 3},
        )
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert hits and "Fog signals" in hits[0]["text"]
        assert set(hits[0]["score_details"]) == {"accurate", "semantic"}


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(HTML)))
        self.end_headers()
        self.wfile.write(HTML)

    def log_message(self, *args) -> None:
        return None


async def test_url_documents_are_fetched_and_ingested(cluster):
    client, _ = await _client(cluster)
    async with client:
        base = await _base(client, "web")
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/harbour"
            page = await client.post(f"/api/knowledge/bases/{base['id']}/documents/url/", json={"url": url})
        finally:
            server.shutdown()
        assert page.status_code == 201, page.text
        document = page.json()["document"]
        assert document["source"] == url and document["source_type"] == "url"
        frames = await _sse_until_end(client, page.json()["task"]["id"])
        assert frames[-1]["task"]["status"] == "done"
        got = (await client.get(f"/api/knowledge/bases/{base['id']}/documents/{document['id']}/")).json()
        assert got["status"] == "ready" and got["chunk_count"] >= 1
        assert got["metadata"]["format"] == "html" and got["metadata"]["url"] == url


async def test_limits_bad_input_and_another_users_base(cluster):
    client, _ = await _client(cluster)
    other, _ = await _client(cluster)
    async with client, other:
        base = await _base(client, "limits")
        url = f"/api/knowledge/bases/{base['id']}/documents/"
        program = await client.post(url, files={"file": ("tool.pdf", ELF)})
        assert program.status_code == 415 and program.json()["code"] == "unsupported_media_type"
        big = await client.post(url, files={"file": ("big.txt", b"word " * (MAX_FILE // 5 + 10))})
        assert big.status_code == 413 and big.json()["code"] == "file_too_large"
        for i in range(3):  # fill the quota (3 x MAX_FILE) with distinct files just under the limit
            filler = (f"{i} " + "tide " * ((MAX_FILE - 20) // 5)).encode()[: MAX_FILE - 10]
            stored = await client.post(url, files={"file": (f"fill{i}.txt", filler)})
            assert stored.status_code in (201, 403), stored.text
        over = await client.post(url, files={"file": ("more.txt", b"one more " * 5000)})
        assert over.status_code == 403 and over.json()["code"] == "quota_exceeded"
        empty = await client.post(f"/api/knowledge/bases/{base['id']}/documents/text/", json={"text": ""})
        assert empty.status_code == 400 and empty.json()["code"] == "validation_error"
        private = await client.post(
            f"/api/knowledge/bases/{base['id']}/documents/url/", json={"url": "http://10.255.255.1/x.txt"}
        )
        assert private.status_code == 403 and private.json()["code"] == "egress_denied"
        duplicate = await client.post("/api/knowledge/bases/", json={"name": "limits"})
        assert duplicate.status_code == 409

        # someone else's base and tasks do not exist for them
        assert (await other.get(f"/api/knowledge/bases/{base['id']}/")).status_code == 404
        assert (await other.post(url, files={"file": ("a.txt", b"hello there")})).status_code == 404
        searched = await other.post("/api/knowledge/search/", json={"bases": [base["id"]], "query": "tide"})
        assert searched.status_code == 404
        tasks = (await client.get("/api/knowledge/tasks/")).json()
        assert tasks
        assert (await other.get(f"/api/knowledge/tasks/{tasks[0]['id']}/")).status_code == 404
        assert (await other.get(f"/api/knowledge/tasks/{tasks[0]['id']}/events/")).status_code == 404


async def test_progress_frames_over_the_knowledge_socket(cluster):
    client, token = await _client(cluster)
    async with client:
        base = await _base(client, "socket", chunk_size=16, chunk_overlap=0)
        socket = await Socket.open(cluster.ws("/ws/knowledge/"), token)
        try:
            await socket.until("connection")
            text = " ".join(f"Sentence {i} tells of ships and tides." for i in range(600))
            added = await client.post(
                f"/api/knowledge/bases/{base['id']}/documents/text/", json={"text": text}
            )
            assert added.status_code == 201, added.text
            task_id = added.json()["task"]["id"]
            frames = []
            while True:
                frame = await socket.until("task_progress", timeout=60)
                assert frame["task"]["id"] == task_id
                frames.append(frame["task"])
                if frame["task"]["status"] in ("done", "failed"):
                    break
            assert frames[-1]["status"] == "done", frames[-1]
            stages = [f["stage"] for f in frames if f["stage"]]
            assert "embed" in stages and stages[-1] == "index"
            embeds = [f for f in frames if f["stage"] == "embed"]
            chunks = frames[-1]["total"]
            assert chunks > 64  # several batches, yet far fewer frames than chunks (throttled)
            assert len(frames) < chunks / 4
            assert all(f["done"] <= f["total"] for f in embeds)
        finally:
            await socket.close()

        # a socket opened while a task is queued or running gets it in its snapshot; none now
        again = await Socket.open(cluster.ws("/ws/knowledge/"), token)
        try:
            await again.until("connection")
            with contextlib.suppress(TimeoutError):
                while True:
                    await again.recv(0.5)
            assert not [f for f in again.frames if f.get("type") == "task_progress"]
        finally:
            await again.close()

    refused = await Socket.open(cluster.ws("/ws/knowledge/"), "not-a-token")
    assert await refused.close_code() == 4003


async def test_seed002_tasks_upload_and_index_documents(cluster):
    client, _ = await _client(cluster)
    async with client:
        uploaded = await client.post(
            "/api/file/upload",
            files=[
                ("file", ("a.md", PROSE.encode())),
                ("file", ("b.txt", b"Buoys are painted red and green.")),
            ],
            data={"index_name": "seed-index", "chunking_strategy": "by_title"},
        )
        assert uploaded.status_code == 200, uploaded.text
        body = uploaded.json()
        assert isinstance(body["message"], str) and body["uploaded_files"] == ["a.md", "b.txt"]
        task_id = body["process_tasks"]["task_id"]
        assert len(body["process_tasks"]["task_ids"]) == 2

        async def settled(tid: str) -> dict:
            for _ in range(240):
                state = (await client.get(f"/api/tasks/{tid}")).json()
                if state["status"] in ("SUCCESS", "FAILURE"):
                    return state
                await asyncio.sleep(0.25)
            raise AssertionError(f"task {tid} never ended")

        state = await settled(task_id)
        assert set(state) == {"id", "status", "created_at", "updated_at", "error"}
        assert state["status"] == "SUCCESS" and state["error"] == ""
        details = (await client.get(f"/api/tasks/{task_id}/details")).json()
        assert details["results"]["chunks"] >= 1

        # a stored file by object_name, text, and a batch
        made = await client.post(
            "/api/tasks",
            json={
                "source": "Anchors hold best in clay.",
                "source_type": "text",
                "chunking_strategy": "basic",
                "index_name": "seed-index",
                "additional_params": {},
            },
        )
        assert made.status_code == 200, made.text
        assert (await settled(made.json()["task_id"]))["status"] == "SUCCESS"
        batch = await client.post(
            "/api/tasks/batch",
            json={
                "sources": [
                    {"source": "knowledge/a.md", "source_type": "minio", "index_name": "other-index"},
                    {
                        "source": "Charts are updated weekly.",
                        "source_type": "text",
                        "index_name": "other-index",
                    },
                ]
            },
        )
        assert batch.status_code == 200, batch.text
        for tid in batch.json()["task_ids"]:
            assert (await settled(tid))["status"] == "SUCCESS"
        listed = (await client.get("/api/tasks")).json()["tasks"]
        assert len(listed) == 5
        active = (await client.get("/api/tasks/indices/seed-index/tasks")).json()
        assert active == {"index_name": "seed-index", "files": []}

        indexed = await client.post(
            "/api/indices/seed-index/documents",
            json={
                "task_id": task_id,
                "results": [
                    {
                        "metadata": {
                            "filename": "log.txt",
                            "title": "Log",
                            "author": "ann",
                            "languages": ["en"],
                        },
                        "source": "log.txt",
                        "text": "The pier lights were repaired on Tuesday.",
                        "source_type": "file",
                    },
                    {"source": "nothing", "text": ""},
                ],
            },
        )
        assert indexed.status_code == 200, indexed.text
        assert indexed.json() == {
            "success": False,
            "message": "Indexed 1 of 2 documents.",
            "total_indexed": 1,
            "total_submitted": 2,
        }
        missing = await client.get("/api/tasks/00000000-0000-0000-0000-000000000000")
        assert missing.status_code == 404
        nofile = await client.post(
            "/api/tasks", json={"source": "nowhere/x.pdf", "source_type": "minio", "index_name": "seed-index"}
        )
        assert nofile.status_code == 404
        nobase = await client.post("/api/indices/nope/documents", json={"results": []})
        assert nobase.status_code == 404
