"""`GET /health`: is this process able to serve? No auth; 503 when a required backend is down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone

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
        channel = await asyncio.wait_for(layer.new_channel("health."), CHECK_TIMEOUT)
        await asyncio.wait_for(layer.send(channel, {"type": "health.ping"}), CHECK_TIMEOUT)
        await asyncio.wait_for(layer.receive(channel), CHECK_TIMEOUT)
    except Exception as exc:
        return {"status": "down", "backend": backend, "error": exc.__class__.__name__}
    return {
        "status": "ok",
        "backend": backend,
        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
    }


async def health(request) -> JsonResponse:
    database, channel_layer = await asyncio.gather(check_database(), check_channel_layer())
    required_ok = database["status"] == "ok" and channel_layer["status"] == "ok"
    body = {
        "status": "ok" if required_ok else "down",
        "database": database,
        "channel_layer": channel_layer,
        "run_mode": settings.NEXUS_RUN_MODE,
        "version": settings.NEXUS_VERSION,
        "timestamp": timezone.now().isoformat(),
    }
    return JsonResponse(body, status=200 if required_ok else 503)
