"""Tasks owned by the process, not by the request or socket that happened to start them."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any


def process_task(coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
    """Start ``coro`` on the running loop in a fresh, empty context.

    A task copies the context it is created in. Created under ``async_to_sync`` (a sync view
    starting a run), that context points asgiref's thread-sensitive calls at the view's thread
    executor, which is gone once the view returns: every later database call of the task would
    fail with "CurrentThreadExecutor already quit". Long-lived work (runs, the sweeper, the log
    tail) must not inherit anything from whoever started it.
    """
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
