"""``GET /api/knowledge/tasks/{id}/events/``: one ingest task's progress as Server-Sent Events,
until it ends (docs/knowledge.md "Progress"). The view reads the task's row every half second and
sends a ``task_progress`` event whenever it changed, so it needs no channel layer and misses
nothing that matters: the last state is always sent, and the stream ends after a ``done`` or
``failed`` one. A comment line every 15 s keeps proxies from closing a quiet stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponseBase

from core.auth import User
from knowledge import selectors
from knowledge import tasks as ingest_tasks
from knowledge.models import IngestTask
from realtime import http_views as native
from realtime import protocol
from realtime.knowledge_socket import progress_frame
from realtime.seed002_files import methods_allow

POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0
ENDED = (IngestTask.Status.DONE, IngestTask.Status.FAILED)


def _task_state(user: User, task_id: Any) -> dict[str, Any]:
    return ingest_tasks.task_frame(selectors.task_get_for_user(user=user, task_id=task_id))


async def _follow(user: User, task_id: str, first: dict[str, Any]) -> AsyncIterator[bytes]:
    state = first
    sent: dict[str, Any] | None = None
    last_write = time.monotonic()
    while True:
        comparable = {k: v for k, v in state.items() if k != "updated_at"}
        if comparable != sent:
            sent = comparable
            last_write = time.monotonic()
            yield protocol.sse_event(progress_frame(state), event_name="task_progress")
            if state["status"] in ENDED:
                return
        elif time.monotonic() - last_write >= KEEPALIVE_SECONDS:
            last_write = time.monotonic()
            yield protocol.sse_comment("keepalive")
        await asyncio.sleep(POLL_SECONDS)
        try:
            state = await database_sync_to_async(_task_state)(user, task_id)
        except Exception:  # deleted with its base: the stream ends
            yield protocol.sse_event(protocol.error_frame("not_found", "Task not found."), event_name="error")
            return


@native.authenticated_endpoint
async def task_events(request: HttpRequest, task_id: str, *, user: User) -> HttpResponseBase:
    methods_allow(request, "GET")
    first = await database_sync_to_async(_task_state)(user, task_id)  # NotFound: 404 before streaming
    return native._sse_response(_follow(user, str(first["id"]), first))
