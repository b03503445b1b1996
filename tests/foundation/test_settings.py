"""Settings come only from the environment, and a bad value stops the process with a clear error."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.procs import ROOT, base_env, manage


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("DATABASE_URL", "mysql2://nowhere/db", "DATABASE_URL"),
        ("DATABASE_URL", "postgres://127.0.0.1:5432/", "DATABASE_URL names no database"),
        ("REDIS_URL", "http://127.0.0.1:6379", "REDIS_URL must start with redis://"),
        ("REDIS_URL", "redis://127.0.0.1:notaport/0", "REDIS_URL has an invalid port"),
        ("REDIS_URL", "redis://127.0.0.1:6379/abc", "REDIS_URL database must be a number"),
        ("NEXUS_RUN_MODE", "threads", "NEXUS_RUN_MODE"),
        ("NEXUS_WS_MAX_SOCKETS_PER_USER", "many", "is not an integer"),
        ("DJANGO_DEBUG", "maybe", "is not a boolean"),
        ("NEXUS_THROTTLE_LOGIN", "ten per minute", "is not a rate"),
        (
            "NEXUS_EGRESS_ALLOW",
            "127.0.0.1,10.0.0.0/33",
            "NEXUS_EGRESS_ALLOW: '10.0.0.0/33' is not a valid CIDR",
        ),
        ("NEXUS_KEY_HOSTS", "api.groq.com", "NEXUS_KEY_HOSTS: 'api.groq.com' is not VARIABLE_API_KEY=host"),
        ("NEXUS_AUTH_RECHECK_SECONDS", "61", "NEXUS_AUTH_RECHECK_SECONDS must be at most 60"),
        ("NEXUS_SSE_MAX_AGE_SECONDS", "0", "is below the minimum"),
    ],
)
def test_a_bad_value_gives_a_clear_error_at_start(tmp_path, name, value, expected):
    env = base_env(NEXUS_VAR_DIR=str(tmp_path), **{name: value})
    result = manage("check", env=env, timeout=60)
    assert result.returncode != 0
    assert "Configuration error" in result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_mode_needs_redis(tmp_path):
    result = manage("check", env=base_env(NEXUS_VAR_DIR=str(tmp_path), NEXUS_RUN_MODE="worker"), timeout=60)
    assert result.returncode != 0
    assert "NEXUS_RUN_MODE=worker needs REDIS_URL" in result.stderr


def test_the_embedded_defaults_need_no_configuration(tmp_path):
    result = manage("check", env=base_env(NEXUS_VAR_DIR=str(tmp_path)), timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret_key").exists()


def _python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


BACKENDS = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.CHANNEL_LAYERS['default']['BACKEND'], s.CACHES['default']['BACKEND'])"
)


def test_redis_url_switches_the_layer_and_the_cache_to_redis(tmp_path):
    env = base_env(NEXUS_VAR_DIR=str(tmp_path), REDIS_URL="redis://127.0.0.1:6379/3")
    out = _python(
        BACKENDS + "; print(s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0]['socket_timeout'])", env
    )
    assert out.stdout.split() == [
        "channels_redis.core.RedisChannelLayer",
        "django.core.cache.backends.redis.RedisCache",
        "None",  # redis-py 8 would otherwise time out idle reads after 5 s
    ], out.stderr


def test_without_redis_url_everything_is_in_memory(tmp_path):
    out = _python(BACKENDS, base_env(NEXUS_VAR_DIR=str(tmp_path)))
    assert out.stdout.split() == [
        "channels.layers.InMemoryChannelLayer",
        "django.core.cache.backends.locmem.LocMemCache",
    ], out.stderr
