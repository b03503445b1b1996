"""Who is connected: this process's sockets (for the admin's live view) and cluster-wide counts
(from the shared socket registry in realtime.limits) for /api/stats/ and /ws/stats/."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from realtime.limits import get_limits
from runs.eventlog import get_event_log

if TYPE_CHECKING:
    from realtime.consumers import BaseSocket  # for annotations only: consumers imports this module


class Presence:
    def __init__(self) -> None:
        self.sockets: dict[str, dict[str, Any]] = {}
        self.started = time.time()
        self._rate_mark = (time.monotonic(), 0)

    def socket_opened(self, consumer: BaseSocket) -> None:
        self.sockets[consumer.socket_id] = {
            "socket_id": consumer.socket_id,
            "user_id": consumer.user.pk,
            "username": consumer.user.get_username(),
            "path": consumer.scope.get("path", ""),
            "auth": consumer.auth.get("method"),
            "connected_at": time.time(),
            "consumer": consumer,
        }

    def socket_closed(self, consumer: BaseSocket) -> None:
        self.sockets.pop(getattr(consumer, "socket_id", ""), None)

    def local_sockets(self) -> list[dict[str, Any]]:
        rows = []
        for entry in self.sockets.values():
            consumer = entry["consumer"]
            conversation = getattr(consumer, "conversation", None)
            rows.append(
                {
                    **{k: v for k, v in entry.items() if k != "consumer"},
                    "conversation_id": str(conversation.pk) if conversation is not None else None,
                    "last_seq": getattr(consumer, "_cursor", None),
                }
            )
        return rows

    def events_per_second(self, appended: int) -> float:
        now = time.monotonic()
        then, count = self._rate_mark
        self._rate_mark = (now, appended)
        elapsed = now - then
        return round((appended - count) / elapsed, 2) if elapsed > 0 else 0.0


presence = Presence()


async def presence_snapshot() -> dict[str, Any]:
    """Open sockets (total and per user, across processes when Redis is used) and events/s."""
    per_user = await get_limits().sockets_per_user()
    return {
        "sockets_total": sum(per_user.values()),
        "sockets_per_user": per_user,
        "sockets_this_process": len(presence.sockets),
        "events_per_second": presence.events_per_second(get_event_log().appended),
        "uptime_seconds": round(time.time() - presence.started, 1),
    }
