"""Throttles share one budget across processes: two real daphne servers on one Redis.

A client alternating between the servers gets exactly the configured number of requests, then
429 with Retry-After and the JSON error shape from both.
"""

from __future__ import annotations

import httpx
import pytest
import redis

from tests.procs import base_env, manage, processes, start_daphne

pytestmark = [pytest.mark.slow, pytest.mark.redis]

PASSWORD = "shared-budget-password-1"


@pytest.fixture
def servers(tmp_path, redis_url, redis_prefix):
    env = base_env(
        NEXUS_VAR_DIR=str(tmp_path),
        REDIS_URL=redis_url,
        NEXUS_REDIS_PREFIX=redis_prefix,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        NEXUS_THROTTLE_LOGIN="3/min",
        NEXUS_THROTTLE_AGENT_OPS="4/min",
    )
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    made = manage(
        "shell",
        "-c",
        "from django.contrib.auth import get_user_model; "
        f"get_user_model().objects.create_user('budget', password='{PASSWORD}')",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    with processes() as started:
        urls = []
        for _ in range(2):
            proc, port = start_daphne(env=env, log_dir=tmp_path)
            started.append(proc)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"{redis_prefix}:*"):
        client.delete(key)


def _assert_throttled(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == "rate_limited" and body["detail"] and body["timestamp"]


def test_the_login_budget_is_shared_by_two_servers(servers, redis_url, redis_prefix):
    a, b = servers
    good = {"username": "budget", "password": PASSWORD}
    first = httpx.post(f"{a}/api/auth/login", json=good, timeout=10)
    assert first.status_code == 200, first.text
    assert (
        httpx.post(f"{b}/api/auth/login", json={**good, "password": "wrong"}, timeout=10).status_code == 401
    )
    assert httpx.post(f"{a}/api/auth/login", data=good, timeout=10).status_code == 200  # form-encoded
    _assert_throttled(httpx.post(f"{b}/api/auth/login", json=good, timeout=10))
    _assert_throttled(httpx.post(f"{a}/api/auth/login", json=good, timeout=10))
    keys = list(redis.Redis.from_url(redis_url).scan_iter(f"{redis_prefix}:*throttle:login*"))
    # one window per identity (the IP, the username) in the shared Redis, not one per process
    assert len(keys) == 2

    # a per-user budget, shared the same way
    token = first.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    for url in (a, b, a, b):
        assert httpx.get(f"{url}/api/agents/", headers=headers, timeout=10).status_code == 200
    _assert_throttled(httpx.get(f"{a}/api/agents/", headers=headers, timeout=10))
    _assert_throttled(httpx.get(f"{b}/api/agents/", headers=headers, timeout=10))
