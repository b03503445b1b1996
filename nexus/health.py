"""`GET /health`: is this process able to serve? No auth; 503 when a required backend is down.

Required: the database, the channel layer, the shared cache and the event log (Redis when
REDIS_URL is set). Providers are reported but never make the answer 503: a slow or unreachable
provider is the provider's problem, not this process's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

from agents.config_reload import config_reload_register
from agents.provider_config import provider_statuses
from core.tasks import process_task
from runs.eventlog import get_event_log

CHECK_TIMEOUT = 3.0


def _database_ping() -> dict[str, Any]:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {
        "status": "ok",
        "vendor": connection.vendor,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def check_database() -> dict[str, Any]:
    try:
        return await asyncio.wait_for(sync_to_async(_database_ping, thread_sensitive=True)(), CHECK_TIMEOUT)
    except Exception as exc:  # any failure means "down"; the detail goes to the log, not the client
        return {"status": "down", "error": exc.__class__.__name__}


async def check_channel_layer() -> dict[str, Any]:
    """A real round trip through the layer: send to a fresh channel and receive it back."""
    layer = get_channel_layer()
    backend = "redis" if settings.REDIS_URL else "memory"
    if layer is None:
        return {"status": "down", "backend": backend, "error": "not configured"}
    started = time.perf_counter()
    try:
        channel = await asyncio.wait_for(layer.new_channel("health"), CHECK_TIMEOUT)
        await asyncio.wait_for(layer.send(channel, {"type": "health.ping"}), CHECK_TIMEOUT)
        await asyncio.wait_for(layer.receive(channel), CHECK_TIMEOUT)
    except Exception as exc:
        return {"status": "down", "backend": backend, "error": exc.__class__.__name__}
    return {
        "status": "ok",
        "backend": backend,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def check_cache() -> dict[str, Any]:
    """The shared cache (throttles, WebSocket tickets): a write and a read back."""
    backend = "redis" if settings.REDIS_URL else "memory"
    key = f"health:{uuid.uuid4().hex}"
    started = time.perf_counter()
    try:
        await asyncio.wait_for(cache.aset(key, "1", timeout=5), CHECK_TIMEOUT)
        value = await asyncio.wait_for(cache.aget(key), CHECK_TIMEOUT)
        await asyncio.wait_for(cache.adelete(key), CHECK_TIMEOUT)
    except Exception as exc:
        return {"status": "down", "backend": backend, "error": exc.__class__.__name__}
    if value != "1":
        return {"status": "down", "backend": backend, "error": "read back failed"}
    return {
        "status": "ok",
        "backend": backend,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def check_event_log() -> dict[str, Any]:
    """The conversation event log (Redis Streams or memory)."""
    try:
        return await asyncio.wait_for(get_event_log().ping(), CHECK_TIMEOUT)
    except Exception as exc:
        return {"status": "down", "error": exc.__class__.__name__}


# Provider checks can take seconds (a remote API, DNS): /health answers from a short-lived cache
# and waits at most PROVIDER_WAIT for a refresh, so a load balancer's probe is never slowed down.
PROVIDER_CACHE_SECONDS = 30.0
PROVIDER_WAIT = 1.0
_providers: dict[str, Any] = {"at": None, "checked_at": None, "value": None}
_provider_refresh: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = (
    weakref.WeakKeyDictionary()
)


def _providers_forget() -> None:
    _providers.update(at=None)


config_reload_register("health_providers", _providers_forget)


async def _refresh_providers() -> dict[str, Any]:
    statuses = await provider_statuses()
    value = {item["name"]: {k: v for k, v in item.items() if k != "name"} for item in statuses}
    _providers.update(at=time.monotonic(), checked_at=timezone.now().isoformat(), value=value)
    return value


async def check_providers() -> tuple[dict[str, Any], str | None]:
    """Each provider's reachability and when it was checked. Informational only: never makes
    /health fail, and never makes it wait longer than PROVIDER_WAIT."""
    fresh = _providers["at"] is not None and time.monotonic() - _providers["at"] < PROVIDER_CACHE_SECONDS
    if fresh:
        return _providers["value"], _providers["checked_at"]
    loop = asyncio.get_running_loop()
    task = _provider_refresh.get(loop)
    if task is None or task.done():
        task = process_task(_refresh_providers())
        _provider_refresh[loop] = task
    try:
        return await asyncio.wait_for(asyncio.shield(task), PROVIDER_WAIT), _providers["checked_at"]
    except TimeoutError:
        return _providers["value"] or {}, _providers["checked_at"]
    except Exception as exc:
        return {"error": exc.__class__.__name__}, _providers["checked_at"]


REQUIRED = ("database", "channel_layer", "cache", "event_log")


async def health(request) -> JsonResponse:
    database, channel_layer, cache_status, event_log, (providers, checked_at) = await asyncio.gather(
        check_database(), check_channel_layer(), check_cache(), check_event_log(), check_providers()
    )
    checks = {
        "database": database,
        "channel_layer": channel_layer,
        "cache": cache_status,
        "event_log": event_log,
    }
    # "unknown" (a component not installed yet) is not "down"
    required_ok = all(checks[name]["status"] != "down" for name in REQUIRED)
    body = {
        "status": "ok" if required_ok else "down",
        **checks,
        "providers": providers,
        "providers_checked_at": checked_at,
        "run_mode": settings.NEXUS_RUN_MODE,
        # single-user mode (NEXUS_AUTH=off) is shown to anyone who asks: it is the thing to notice
        "auth": (
            {"mode": "off", "single_user": settings.NEXUS_SINGLE_USER}
            if settings.NEXUS_AUTH_OFF
            else {"mode": "on"}
        ),
        "version": settings.NEXUS_VERSION,
        "timestamp": timezone.now().isoformat(),
    }
    return JsonResponse(body, status=200 if required_ok else 503)
