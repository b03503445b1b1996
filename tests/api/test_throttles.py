"""Each scoped throttle fires at its rate, with 429, Retry-After and the error shape; the window
slides, refused requests are not counted, and the Redis and in-memory paths agree."""

from __future__ import annotations

import time

import pytest
import redis
from django.test import override_settings

from core import throttles
from core.auth import tokens_issue
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

LOGIN = {"username": "alice", "password": "alice-password-123"}


def test_login_is_throttled_per_ip(anon, user, other_user, throttle_rate):
    throttle_rate("login", "2/min")
    assert anon.post("/api/auth/login", LOGIN, format="json").status_code == 200
    assert anon.post("/api/auth/login", {**LOGIN, "password": "x"}, format="json").status_code == 401
    response = anon.post("/api/auth/login", {**LOGIN, "username": "mallory"}, format="json")
    assert_error(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    # another address has its own budget (for another username: alice's own budget is spent too)
    other_ip = anon.post(
        "/api/auth/login",
        {"username": "mallory", "password": "mallory-password-123"},
        format="json",
        REMOTE_ADDR="10.0.0.9",
    )
    assert other_ip.status_code == 200


def test_a_forged_forwarded_for_does_not_escape_the_login_throttle(anon, user, throttle_rate):
    throttle_rate("login", "1/min")
    assert anon.post("/api/auth/login", LOGIN, format="json").status_code == 200
    response = anon.post("/api/auth/login", LOGIN, format="json", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert_error(response, 429)


def test_verify_is_throttled_per_ip_failures_included(anon, user, throttle_rate):
    throttle_rate("verify", "2/min")
    anon.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    assert anon.post("/api/auth/verify").status_code == 401
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_issue(user)['access_token']}")
    assert anon.post("/api/auth/verify").status_code == 200
    assert_error(anon.post("/api/auth/verify"), 429, "rate_limited")


def test_refresh_is_throttled_per_ip(anon, user, throttle_rate):
    throttle_rate("refresh", "1/min")
    token = tokens_issue(user)["refresh_token"]
    assert anon.post("/api/auth/refresh", {"refresh_token": token}, format="json").status_code == 200
    assert_error(anon.post("/api/auth/refresh", {"refresh_token": token}, format="json"), 429)


def test_the_rates_come_from_the_settings():
    from django.conf import settings

    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    assert set(rates) >= {
        "login",
        "verify",
        "refresh",
        "conversation_create",
        "conversation_read",
        "agent_ops",
    }
    assert throttles.parse_rate("10/min") == (10, 60)
    assert throttles.parse_rate("5/s") == (5, 1)
    assert throttles.parse_rate("100/hour") == (100, 3600)
    assert throttles.parse_rate("2/day") == (2, 86400)


def _exercise_window(key: str) -> None:
    assert throttles.hit(key, limit=2, period=1) is None
    assert throttles.hit(key, limit=2, period=1) is None
    wait = throttles.hit(key, limit=2, period=1)
    assert wait is not None and 0 < wait <= 1
    assert throttles.hit(key, limit=2, period=1) is not None  # refused ones are not counted...
    time.sleep(wait + 0.05)
    assert throttles.hit(key, limit=2, period=1) is None  # ...so the window frees up on time


def test_the_in_memory_window_slides():
    _exercise_window("test:memory")


@pytest.mark.redis
def test_the_redis_window_slides(redis_url, redis_prefix):
    caches = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": redis_prefix,
        }
    }
    with override_settings(CACHES=caches):
        assert throttles._redis_client() is not None
        _exercise_window("test:redis")
    # never cache.clear() here: on Redis that is FLUSHDB, and the machine's Redis is shared
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(f"{redis_prefix}:*"))
    assert keys  # the window lived in Redis
    client.delete(*keys)
