"""The production topology (scripts/cluster.py) for fault tests: PostgreSQL, a private Redis, two
daphne processes and two run workers, shared by every test of this package.

Each test may kill anything; ``healthy_cluster`` restarts what is dead before the next test. When
a test fails, the tail of every process's log is printed.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from scripts.cluster import Cluster
from tests.cluster.wsclient import Watcher
from tests.conftest import IN_CI

SCRIPTED_PLUGIN = "scripted=tests.realtime.scripted.ScriptedProvider"
CLUSTER_ENV = {
    "NEXUS_PROVIDER_PLUGINS": SCRIPTED_PLUGIN,
    "NEXUS_LOG_LEVEL": "info",
    "NEXUS_JWT_ACCESS_MINUTES": "60",
    # the zombie test sends 41 messages in about a minute: the run quotas have tests of their own
    "NEXUS_RUNS_PER_MINUTE_PER_USER": "100000",
}


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; it is mandatory in CI")
        pytest.skip("redis-server is not installed")
    return path


@pytest.fixture(scope="session")
def cluster(postgres_url: str, redis_server_binary: str, tmp_path_factory) -> Iterator[Cluster]:
    log_dir = tmp_path_factory.mktemp("cluster")
    with Cluster(log_dir=log_dir, postgres_url=postgres_url, env=CLUSTER_ENV) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy_cluster(request, cluster: Cluster) -> Iterator[Cluster]:
    """Every service is up before the test; whatever a test killed is started again after it."""
    _revive(cluster)
    yield cluster
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for name in cluster.services:
            print(f"\n===== {name} ({cluster.log_dir / (name + '.log')}) =====")
            print("\n".join(cluster.log(name).splitlines()[-40:]))
    _revive(cluster)


def _revive(cluster: Cluster) -> None:
    for name in cluster.services:
        if not cluster.alive(name):
            cluster.start_service(name)
    deadline = time.monotonic() + 30
    while not all(cluster.health(name)[0] == 200 for name in cluster.web_names):
        assert time.monotonic() < deadline, "the cluster did not become healthy again"
        time.sleep(0.2)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def scripted_agent(name: str, *, reply: str, chunks: int, delay: float) -> dict[str, Any]:
    return {
        "name": name,
        "provider": "scripted",
        "model": "scripted-1",
        "config": {"reply": reply, "chunks": chunks, "delay": delay},
    }


def conversations_spec(
    users: int, agent: dict[str, Any], *, per_user: int = 1, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``users`` new users (unique names), each with ``per_user`` conversations with ``agent``."""
    tag = uuid.uuid4().hex[:8]
    names = [f"u{tag}-{i}" for i in range(users)]
    return {
        "users": [{"username": name} for name in names],
        "agents": [agent],
        "conversations": [
            {"owner": name, "agents": [agent["name"]], "settings": settings}
            for name in names
            for _ in range(per_user)
        ],
    }


async def open_watchers(
    cluster: Cluster, conversations: list[dict[str, Any]], *, per_conversation: int, web_of=None
) -> list[Watcher]:
    """``per_conversation`` sockets on each conversation, spread over the web processes."""
    webs = cluster.web_names
    watchers = []
    for i, conversation in enumerate(conversations):
        for j in range(per_conversation):
            web = web_of(i, j) if web_of else webs[(i + j) % len(webs)]
            watcher = Watcher(
                conversation_id=conversation["id"], token=conversation["token"], name=f"c{i}s{j}@{web}"
            )
            watcher.web = web  # type: ignore[attr-defined]
            watchers.append(watcher)

    async def connect(watcher: Watcher) -> None:
        await watcher.connect(cluster.ws_url(watcher.web))  # type: ignore[attr-defined]
        await watcher.wait_frame("session_state")

    await asyncio.gather(*(connect(w) for w in watchers))
    return watchers


async def close_all(watchers: list[Watcher]) -> None:
    await asyncio.gather(*(w.close() for w in watchers), return_exceptions=True)


def stored_replies(cluster: Cluster, conversation_id: str) -> list[tuple[str, str, str]]:
    """(message id, status, content) of the agent replies of a conversation, oldest first."""
    rows = cluster.sql(
        "select id::text, status, content from conversations_message "
        "where conversation_id = %s and role = 'agent' and type = 'message' order by created_at",
        (conversation_id,),
    )
    return [(r[0], r[1], r[2]) for r in rows]


def runs_of(cluster: Cluster, conversation_id: str) -> list[dict[str, Any]]:
    rows = cluster.sql(
        "select id::text, status, owner, error from conversations_run where conversation_id = %s "
        "order by created_at",
        (conversation_id,),
    )
    return [{"id": r[0], "status": r[1], "owner": r[2], "error": r[3]} for r in rows]


def service_of_owner(cluster: Cluster, owner: str) -> str | None:
    """The service name whose process owns a run (``host:pid|channel``)."""
    pid = int(owner.split("|", 1)[0].rsplit(":", 1)[1]) if owner else -1
    return next((name for name, p in cluster.pids().items() if p == pid), None)
