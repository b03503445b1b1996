"""`GET /health` (no auth; 503 only when a required backend is down; providers informational) and
`GET /api/stats/` (staff) with `stats_snapshot()`, which the /ws/stats/ consumer reuses."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from nexus import health
from providers.registry import registry
from realtime.stats_api import stats_snapshot
from runs.models import Run
from tests.api.conftest import assert_error, make_conversation
from tests.api.providers_for_tests import Hanging
from tests.procs import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_cached_provider_statuses():
    health._providers.update(at=None, checked_at=None, value=None)
    yield
    health._providers.update(at=None, checked_at=None, value=None)


def test_health_needs_no_auth_and_reports_every_backend(client):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    for name in ("database", "channel_layer", "cache", "event_log"):
        assert body[name]["status"] == "ok", (name, body[name])
    assert body["version"]
    assert isinstance(body["providers"], dict)
    assert client.get("/health/").status_code == 200


def test_a_slow_provider_never_slows_or_fails_health(client, settings):
    settings.NEXUS_PROVIDER_STATUS_TIMEOUT = 30
    with registry.override("hanging", Hanging()):
        started = time.monotonic()
        response = client.get("/health")
        elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert elapsed < health.PROVIDER_WAIT + 2.5


def test_provider_statuses_are_reported_and_cached(client):
    first = client.get("/health").json()
    if not first["providers"]:  # the first check may still be running: ask again
        time.sleep(health.PROVIDER_WAIT)
        first = client.get("/health").json()
    assert "local" in first["providers"]
    assert set(first["providers"]["local"]) >= {"reachable", "models"}
    assert first["providers_checked_at"]
    second = client.get("/health").json()
    assert second["providers_checked_at"] == first["providers_checked_at"]


@pytest.mark.redis
def test_a_dead_redis_cache_makes_health_503(client, redis_url):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    caches = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": dead}}
    with override_settings(CACHES=caches):
        response = client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "down"
    assert body["cache"]["status"] == "down"
    assert body["database"]["status"] == "ok"


async def test_health_checks_report_down_instead_of_raising(settings):
    settings.REDIS_URL = None
    result = await health.check_event_log()
    assert result["status"] in {"ok", "unknown"}


# --- stats ------------------------------------------------------------------------------------


def test_staff_get_stats(operator, user, shared_agent):
    conversation = make_conversation(user, shared_agent)
    other = make_conversation(user, shared_agent)
    Run.objects.create(conversation=conversation, agent=shared_agent, status="running")
    Run.objects.create(conversation=conversation, agent=shared_agent, status="queued")
    Run.objects.create(conversation=other, agent=shared_agent, status="queued")
    Run.objects.create(conversation=other, agent=shared_agent, status="completed")
    response = operator.get("/api/stats/")
    assert response.status_code == 200
    body = response.json()
    assert body["runs_in_flight"] == {"total": 3, "queued": 2, "running": 1}
    assert body["sockets"]["status"] == "ok"
    assert body["sockets"]["total"] == 0 and body["sockets"]["per_user"] == {}
    assert body["events_per_second"] >= 0
    assert body["uptime_seconds"] > 0
    assert body["pid"] > 0


def test_stats_are_for_staff_only(alice, anon, db):
    assert_error(alice.get("/api/stats/"), 403, "forbidden")
    assert_error(anon.get("/api/stats/"), 401, "not_authenticated")


async def test_stats_snapshot_is_what_the_stats_socket_pushes(db):
    snapshot = await stats_snapshot()
    assert set(snapshot) == {
        "sockets",
        "runs_in_flight",
        "events_per_second",
        "uptime_seconds",
        "started_at",
        "pid",
        "timestamp",
    }
    assert snapshot["runs_in_flight"]["total"] == 0
