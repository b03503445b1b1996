"""`GET /api/stats/` (staff): open sockets, runs in flight, events/s, uptime (seed 003 connection stats).

:func:`stats_snapshot` is shared with the ``/ws/stats/`` consumer, which pushes it every 5 s.
Sockets and events/s come from ``realtime.presence`` (shared by every process through Redis when
configured); runs in flight come from the database, so they count every process and worker.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async
from django.db.models import Count
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from realtime.presence import presence_snapshot
from runs.models import RunStatus
from runs.selectors import runs_in_flight

logger = logging.getLogger("nexus.stats")

# This module is imported when the URLconf loads, i.e. when the process starts serving.
PROCESS_STARTED_AT = time.time()


def _runs_in_flight() -> dict[str, int]:
    counts = dict(runs_in_flight().order_by().values_list("status").annotate(n=Count("id")))
    queued = counts.get(RunStatus.QUEUED, 0)
    running = counts.get(RunStatus.RUNNING, 0)
    return {"total": queued + running, "queued": queued, "running": running}


async def _presence() -> dict[str, Any] | None:
    """``realtime.presence.presence_snapshot()``, or None when it fails."""
    try:
        return await presence_snapshot()
    except Exception:  # stats must not fail because presence did: report it as unknown
        logger.warning("presence snapshot failed", exc_info=True)
        return None


async def stats_snapshot() -> dict[str, Any]:
    """Open sockets (total, per user), runs in flight, events per second, uptime."""
    presence = await _presence()
    runs = await sync_to_async(_runs_in_flight, thread_sensitive=True)()
    if presence is None:
        sockets: dict[str, Any] = {"status": "unknown", "total": None, "per_user": {}}
        events_per_second = None
    else:
        sockets = {
            "status": "ok",
            "total": int(presence.get("sockets_total", 0)),
            "per_user": {str(user): int(n) for user, n in presence.get("sockets_per_user", {}).items()},
        }
        events_per_second = float(presence.get("events_per_second", 0.0))
    now = time.time()
    return {
        "sockets": sockets,
        "runs_in_flight": runs,
        "events_per_second": events_per_second,
        "uptime_seconds": round(now - PROCESS_STARTED_AT, 3),
        "started_at": datetime.fromtimestamp(PROCESS_STARTED_AT, tz=UTC).isoformat(),
        "pid": os.getpid(),
        "timestamp": timezone.now().isoformat(),
    }


class SocketStatsSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unknown"])
    total = serializers.IntegerField(allow_null=True)
    per_user = serializers.DictField(child=serializers.IntegerField(), help_text="{user_id: open sockets}")


class RunStatsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    queued = serializers.IntegerField()
    running = serializers.IntegerField()


class StatsSerializer(serializers.Serializer):
    sockets = SocketStatsSerializer()
    runs_in_flight = RunStatsSerializer()
    events_per_second = serializers.FloatField(allow_null=True)
    uptime_seconds = serializers.FloatField(help_text="Of the process that answered.")
    started_at = serializers.DateTimeField()
    pid = serializers.IntegerField()
    timestamp = serializers.DateTimeField()


class StatsView(APIView):
    permission_classes = (IsAdminUser,)

    @extend_schema(tags=["operations"], summary="Server statistics (staff)", responses={200: StatsSerializer})
    def get(self, request: Request) -> Response:
        return Response(async_to_sync(stats_snapshot)())
