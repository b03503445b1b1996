"""Ingest tasks in worker mode: real ``runworker`` processes, Redis and the suite's database
server (a throwaway database). A task runs in a worker; a worker SIGKILLed mid-task leaves a task
whose heartbeat goes stale, which a sweeper queues again and the other worker finishes: never
stuck (docs/knowledge.md "Tasks"). The pipeline is slowed only by the test-only setting
``NEXUS_INGEST_TEST_BATCH_DELAY`` (a sleep after each embedded batch)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3

import httpx
import pytest

from tests.realtime_procs.cluster import Cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, redis_server_url):
    cluster = Cluster(
        tmp_path_factory.mktemp("ktasks-worker"),
        redis_server_url,
        extra_env={
            "NEXUS_INGEST_TEST_BATCH_DELAY": "0.3",
            "NEXUS_INGEST_STALE_SECONDS": "3",
            "NEXUS_RUN_STALE_SECONDS": "6",  # housekeeping (which sweeps tasks) every 2 s
            "NEXUS_RUN_HEARTBEAT_SECONDS": "1",
        },
    )
    try:
        cluster.start(webs=1, workers=2)
        yield cluster
    finally:
        cluster.stop()


def _task_row(cluster: Cluster, task_id: str) -> tuple[str, str, int]:
    """(status, claimed_by, attempts) read from the cluster's database."""
    url = cluster.env["DATABASE_URL"]
    query = "select status, claimed_by, attempts from knowledge_ingesttask where id = %s"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            row = conn.execute(query.replace("%s", "?"), (task_id.replace("-", ""),)).fetchone()
    else:
        import psycopg

        with psycopg.connect(url) as conn:
            row = conn.execute(query, (task_id,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


async def _client(cluster: Cluster) -> httpx.AsyncClient:
    _, token = await cluster.user()
    return httpx.AsyncClient(
        base_url=cluster.http(0), headers={"Authorization": f"Bearer {token}"}, timeout=httpx.Timeout(60)
    )


async def _wait_task(client: httpx.AsyncClient, task_id: str, until, timeout: float = 120.0) -> dict:
    for _ in range(int(timeout / 0.2)):
        task = (await client.get(f"/api/knowledge/tasks/{task_id}/")).json()
        if until(task):
            return task
        await asyncio.sleep(0.2)
    raise AssertionError(f"task {task_id} never reached the state: {task}")


def _worker_pids(cluster: Cluster) -> dict[int, object]:
    return {w.pid: w for w in cluster.live_workers()}


async def test_a_task_runs_in_a_worker(cluster):
    async with await _client(cluster) as client:
        base = (await client.post("/api/knowledge/bases/", json={"name": "w1"})).json()
        added = await client.post(
            f"/api/knowledge/bases/{base['id']}/documents/text/",
            json={"text": "Worker mode ingests this sentence about lighthouses."},
        )
        assert added.status_code == 201, added.text
        task_id = added.json()["task"]["id"]
        task = await _wait_task(client, task_id, lambda t: t["status"] in ("done", "failed"))
        assert task["status"] == "done" and task["attempts"] == 1, task
        _, claimed_by, _ = _task_row(cluster, task_id)
        assert int(claimed_by.rsplit(":", 1)[1]) in _worker_pids(cluster)


async def test_a_worker_killed_mid_task_leaves_it_to_the_other_worker(cluster):
    async with await _client(cluster) as client:
        base = (
            await client.post(
                "/api/knowledge/bases/", json={"name": "w2", "chunk_size": 16, "chunk_overlap": 0}
            )
        ).json()
        text = " ".join(f"Passage {i} recounts the keeper's log of tides and storms." for i in range(1200))
        added = await client.post(f"/api/knowledge/bases/{base['id']}/documents/text/", json={"text": text})
        assert added.status_code == 201, added.text
        task_id = added.json()["task"]["id"]
        running = await _wait_task(
            client, task_id, lambda t: t["status"] == "running" and t["stage"] == "embed" and t["done"] > 0
        )
        assert running["total"] > 64 * 5  # many batches: seconds of work left
        _, claimed_by, _ = _task_row(cluster, task_id)
        workers = _worker_pids(cluster)
        victim_pid = int(claimed_by.rsplit(":", 1)[1])
        assert victim_pid in workers
        workers[victim_pid].kill(signal.SIGKILL)

        task = await _wait_task(client, task_id, lambda t: t["status"] in ("done", "failed"), timeout=180)
        assert task["status"] == "done", (task, cluster.logs())
        assert task["attempts"] == 2
        _, claimed_by, _ = _task_row(cluster, task_id)
        survivor = int(claimed_by.rsplit(":", 1)[1])
        assert survivor != victim_pid and survivor in _worker_pids(cluster)
        document = (
            await client.get(f"/api/knowledge/bases/{base['id']}/documents/{task['document']}/")
        ).json()
        assert document["status"] == "ready" and document["chunk_count"] == task["total"]
