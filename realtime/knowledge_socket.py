"""``/ws/knowledge/``: a user's ingest task progress (docs/knowledge.md "Progress").

On connect (authenticated as every socket; refusals accepted then closed), the socket sends the
``connection`` frame, then one ``task_progress`` frame per active task of the user (the
snapshot), then relays the user's group ``knowledge.user.<id>`` (knowledge/tasks.py publishes at
most a few messages a second per task). Frames: ``{"type": "task_progress", "timestamp",
"task": {id, status, stage, done, total, document, base, attempts, error, ...}}``. Unlike the
conversation sockets this one listens on the channel layer (the group); if the layer goes away
the socket ends, and a reconnect's snapshot reads the state again from the database.
"""

from __future__ import annotations

from typing import Any

import orjson
from channels.db import database_sync_to_async

from knowledge import tasks as ingest_tasks
from realtime.consumers import BaseSocket
from realtime.protocol import now_iso


def progress_frame(task: dict[str, Any]) -> str:
    return orjson.dumps({"type": "task_progress", "timestamp": now_iso(), "task": task}).decode()


class KnowledgeSocket(BaseSocket):
    channel_layer_alias = "default"  # type: ignore[assignment]  # BaseSocket says None: this one listens
    _group: str | None = None

    async def on_connected(self) -> None:
        self._group = ingest_tasks.user_group(self.user.pk)
        assert self.channel_layer is not None
        await self.channel_layer.group_add(self._group, self.channel_name)
        for task in await database_sync_to_async(ingest_tasks.tasks_active_for_user)(self.user):
            await self.send(text_data=progress_frame(ingest_tasks.task_frame(task)))

    async def knowledge_progress(self, event: dict[str, Any]) -> None:
        if not self._closing:
            await self.send(text_data=progress_frame(event.get("task") or {}))

    async def on_disconnected(self) -> None:
        if self._group and self.channel_layer is not None:
            try:
                await self.channel_layer.group_discard(self._group, self.channel_name)
            except Exception:  # the layer is away: its group entries expire on their own
                pass
