"""Seed 002's file storage as its own client speaks it (docs/dialects.md, "Seed 002: files"):
multipart uploads to ``POST /api/file/storage``, the listing, signed expiring URLs fetched with no
credentials, batch URLs and deletion, against a real daphne (embedded topology, a private SQLite
file, files under the cluster's own var directory)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 40
ELF = b"\x7fELF\x02\x01\x01\x00" + bytes(range(256))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("seed002-files"), None)
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


async def _client(cluster: Cluster) -> httpx.AsyncClient:
    _, token = await cluster.user()
    return httpx.AsyncClient(
        base_url=cluster.http(0), headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(30)
    )


def _blobs(root: Path) -> list[bytes]:
    return [p.read_bytes() for p in root.rglob("*") if p.is_file()]


def _error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and isinstance(body["detail"], str) and body["detail"], body
    return body


async def test_upload_list_sign_fetch_batch_and_delete(cluster):
    async with await _client(cluster) as client, httpx.AsyncClient(timeout=30) as nobody:
        uploaded = await client.post(
            "/api/file/storage",
            files=[
                ("files", ("minutes.txt", b"We met and agreed.", "text/plain")),
                ("files", ("chart.png", PNG, "image/png")),
                ("files", ("tool.png", ELF, "image/png")),  # a program calling itself an image
            ],
            data={"folder": "reports"},
        )
        assert uploaded.status_code == 200, uploaded.text
        body = uploaded.json()
        assert {"message", "success_count", "failed_count", "results"} <= set(body)
        assert isinstance(body["message"], str)
        assert body["success_count"] == 2 and body["failed_count"] == 1
        good, image, bad = body["results"]
        assert {"success", "file_name", "url"} <= set(good)
        assert good["success"] is True and good["file_name"] == "minutes.txt"
        assert image["success"] is True and image["object_name"] == "reports/chart.png"
        assert bad["success"] is False and bad["code"] == "unsupported_media_type"

        # the URL is signed and expiring: it needs no credentials
        fetched = await nobody.get(good["url"])
        assert fetched.status_code == 200 and fetched.content == b"We met and agreed."
        assert fetched.headers["content-type"].startswith("text/plain")

        listed = (await client.get("/api/file/storage", params={"prefix": "reports/", "limit": 10})).json()
        assert listed["total"] == 2
        assert {f["name"] for f in listed["files"]} == {"reports/minutes.txt", "reports/chart.png"}
        for item in listed["files"]:
            assert {"name", "size", "url"} <= set(item)
        sizes = {f["name"]: f["size"] for f in listed["files"]}
        assert sizes["reports/chart.png"] == len(PNG)
        without = (await client.get("/api/file/storage", params={"include_urls": "false"})).json()
        assert without["total"] == 2 and all("url" not in f for f in without["files"])
        assert (await client.get("/api/file/storage", params={"prefix": "other/"})).json() == {
            "total": 0,
            "files": [],
        }

        one = (
            await client.get(
                "/api/file/storage/reports/chart.png", params={"download": "true", "expires": 60}
            )
        ).json()
        assert one["success"] is True and isinstance(one["expires"], str)
        download = await nobody.get(one["url"])
        assert download.content == PNG
        assert download.headers["content-disposition"].startswith("attachment")

        batch = (
            await client.post(
                "/api/file/storage/batch-urls",
                json={"object_names": ["reports/minutes.txt", "reports/missing.txt"], "expires": 120},
            )
        ).json()
        assert [(u["object_name"], u["success"]) for u in batch["urls"]] == [
            ("reports/minutes.txt", True),
            ("reports/missing.txt", False),
        ]
        assert (await nobody.get(batch["urls"][0]["url"])).content == b"We met and agreed."

        deleted = (await client.delete("/api/file/storage/reports/minutes.txt")).json()
        assert deleted["success"] is True and isinstance(deleted["message"], str)
        _error(await client.get("/api/file/storage/reports/minutes.txt"), 404, "not_found")
        _error(await nobody.get(good["url"]), 404, "not_found")
        assert (await client.get("/api/file/storage")).json()["total"] == 1
        blobs = await asyncio.to_thread(_blobs, Path(cluster.tmp, "media"))
        assert blobs == [PNG]  # the deleted file's bytes are gone


async def test_other_users_and_strangers_see_nothing_and_refusals_are_clear(cluster):
    async with await _client(cluster) as owner, await _client(cluster) as stranger:
        stored = await owner.post(
            "/api/file/storage", files=[("files", ("secret.txt", b"mine", "text/plain"))]
        )
        assert stored.json()["results"][0]["object_name"] == "attachments/secret.txt"
        assert (await stranger.get("/api/file/storage")).json() == {"total": 0, "files": []}
        _error(await stranger.get("/api/file/storage/attachments/secret.txt"), 404, "not_found")
        _error(await stranger.delete("/api/file/storage/attachments/secret.txt"), 404, "not_found")
        batch = (
            await stranger.post(
                "/api/file/storage/batch-urls", json={"object_names": ["attachments/secret.txt"]}
            )
        ).json()
        assert batch["urls"][0]["success"] is False

        nothing = await owner.post("/api/file/storage", files=[("files", ("x.png", ELF, "image/png"))])
        body = _error(nothing, 415, "unsupported_media_type")
        assert body["success_count"] == 0 and body["failed_count"] == 1
        _error(await owner.post("/api/file/storage", json={"files": []}), 400, "validation_error")
        _error(
            await owner.post("/api/file/storage/batch-urls", json={"object_names": "a.txt"}),
            400,
            "validation_error",
        )
        _error(await owner.get("/api/file/storage", params={"limit": "-1"}), 400, "validation_error")
        _error(await owner.put("/api/file/storage"), 405, "method_not_allowed")
        async with httpx.AsyncClient(base_url=cluster.http(0)) as anonymous:
            _error(await anonymous.get("/api/file/storage"), 401, "not_authenticated")
