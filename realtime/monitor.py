"""Read-only sockets: seed 000's ``neural-event`` monitor (``/`` and ``/ws/events/``) and ``/ws/stats/``."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from agents.models import Agent
from conversations.selectors import conversation_access
from realtime import protocol
from realtime.consumers import CLOSE_INTERNAL, BaseSocket
from realtime.dialects import seed000
from realtime.stats_api import stats_snapshot
from runs.eventlog import get_event_log
from runs.eventlog.base import LoggedEvent

logger = logging.getLogger(__name__)
STATS_INTERVAL = 5.0


def _agent_names(ids: set[str]) -> dict[str, str]:
    return {str(pk): name for pk, name in Agent.objects.filter(pk__in=ids).values_list("pk", "name")}


class EventsSocket(BaseSocket):
    """Every event of the conversations this user may see (staff: all), as ``neural-event``."""

    async def on_connected(self) -> None:
        self._access = conversation_access(self.user)  # fixed for the socket's life, as its user
        self._queue: deque[tuple[str, LoggedEvent]] = deque()
        self._wakeup = asyncio.Event()
        self._codec = seed000.Seed000Codec()
        get_event_log().watch_all(self._on_events)
        self._tasks.append(asyncio.get_running_loop().create_task(self._pump()))

    def _on_events(self, conversation_id: str, owner_id: int | None, events: list[LoggedEvent]) -> None:
        if not self._access.permits(owner_id):
            return
        if len(self._queue) > 10_000:
            return  # a monitor is best-effort by nature: it never holds the process's memory hostage
        self._queue.extend((conversation_id, evt) for evt in events)
        self._wakeup.set()

    async def _pump(self) -> None:
        try:
            await self._deliver()
        except asyncio.CancelledError:
            raise
        except Exception:
            # A failed send must end the socket (the client reconnects), not leave it open and silent.
            logger.exception("monitor delivery failed")
            await self.close_with("internal", "Event delivery failed; reconnect.", CLOSE_INTERNAL)

    async def _deliver(self) -> None:
        while not self._closing:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                conversation_id, evt = self._queue.popleft()
                frame_bytes = settings.NEXUS_WS_MAX_MESSAGE_BYTES
                decoded = self._codec.decode(evt, frame_bytes=frame_bytes)
                unknown = self._codec.agent_ids_unknown([decoded])
                if unknown:
                    names = await database_sync_to_async(_agent_names)(unknown)
                    # an agent deleted since is remembered as nameless, not asked for at every event
                    self._codec.agent_names.update({i: names.get(i, "") for i in unknown})
                for frame in self._codec.render(
                    evt, frame_bytes=frame_bytes, conversation_id=conversation_id, decoded=decoded
                ):
                    await self.send(text_data=frame)

    async def on_disconnected(self) -> None:
        get_event_log().unwatch_all(self._on_events)


class RootMonitorSocket(EventsSocket):
    """Seed 000's WebSocket at the server root ``/``: the seed's greeting, then ``neural-event``
    frames. Its client never sends, so liveness is daphne's WebSocket protocol pings (answered by
    every client library and browser on its own), not the ``ping`` frames a client must answer."""

    app_pings = False

    def connection_frame(self) -> str:
        return seed000.connection_frame(protocol.now_iso())


class StatsSocket(BaseSocket):
    """Staff only: pushes the /api/stats/ snapshot every 5 s."""

    requires_staff = True

    async def on_connected(self) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(self._push()))

    async def _push(self) -> None:
        while not self._closing:
            try:
                snapshot: dict[str, Any] = await stats_snapshot()
            except Exception:
                logger.exception("stats snapshot failed")
                snapshot = {"error": "unavailable"}
            await self.send(text_data=protocol.control_frame("stats", snapshot))
            await asyncio.sleep(STATS_INTERVAL)
