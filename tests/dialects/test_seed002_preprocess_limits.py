"""``POST /api/file/preprocess`` under the file store's limits, against a daphne whose limits are
small (``NEXUS_FILE_MAX_BYTES``, ``NEXUS_FILE_MAX_PER_UPLOAD``): a file over the size limit is
refused in the stream and the others are read; too many files are a 400 before any is read."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(
        tmp_path_factory.mktemp("seed002-preprocess"),
        None,
        extra_env={"NEXUS_FILE_MAX_BYTES": "40", "NEXUS_FILE_MAX_PER_UPLOAD": "2"},
    )
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


def _events(raw: str) -> list[dict]:
    return [json.loads(line[6:]) for line in raw.split("\n") if line.startswith("data: ")]


async def test_the_file_stores_limits_apply(cluster):
    _, token = await cluster.user()
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=cluster.http(0), headers=headers, timeout=30) as client:
        response = await client.post(
            "/api/file/preprocess",
            data={"query": "q"},
            files=[
                ("files", ("small.txt", b"Short and sweet.", "text/plain")),
                ("files", ("big.txt", b"A line of text that is too long. " * 3, "text/plain")),
            ],
        )
        assert response.status_code == 200, response.text
        events = _events(response.text)
        assert events[-1] == {"type": "complete", "processed": 1, "failed": 1}
        [refused] = [e for e in events if e["type"] == "error"]
        assert refused["filename"] == "big.txt" and refused["code"] == "file_too_large"
        assert [e["content"] for e in events if e["type"] == "content"] == ["Short and sweet."]

        files = [("files", (f"f{i}.txt", b"x", "text/plain")) for i in range(3)]
        response = await client.post("/api/file/preprocess", data={"query": "q"}, files=files)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "validation_error"
    async with httpx.AsyncClient(base_url=cluster.http(0), timeout=30) as anonymous:
        response = await anonymous.post(
            "/api/file/preprocess", data={"query": "q"}, files=[("files", ("a.txt", b"a", "text/plain"))]
        )
        assert response.status_code == 401
