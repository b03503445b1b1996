"""One real cluster for the whole package (starting one costs a few seconds): two daphne
processes, a run worker, Redis and a throwaway database (see cluster.py). Tests keep apart by
using their own user, agent and conversation each."""

from __future__ import annotations

import pytest

from tests.realtime_procs.cluster import Cluster


@pytest.fixture(scope="package")
def _cluster(tmp_path_factory, redis_server_url):
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), redis_server_url)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(_cluster, redis_url):
    """The package's cluster, with every web process up and at least one live worker."""
    if not _cluster.live_workers():
        _cluster.start_worker()
    yield _cluster
    dead = [proc.log_path.name for proc in _cluster.web if not proc.alive()]
    assert not dead, f"web processes died: {dead}\n{_cluster.logs()}"
