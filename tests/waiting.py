"""Waiting for an outcome instead of sleeping: poll a condition until it holds or a deadline passes.

A fixed ``sleep`` then ``assert`` is either too short on a loaded machine (a flake) or too long
everywhere (a slow suite); ``eventually`` returns as soon as the condition holds and fails with the
last value seen when it never does.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async


async def eventually(
    probe: Callable[[], Any],
    *,
    until: Callable[[Any], bool] = bool,
    timeout: float = 10,
    interval: float = 0.02,
) -> Any:
    """Call ``probe`` (a function or coroutine function) until ``until(value)`` holds; the value.
    A sync ``probe`` runs in Django's database thread, so it may read the database."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe() if inspect.iscoroutinefunction(probe) else await database_sync_to_async(probe)()
        if until(value):
            return value
        if loop.time() >= deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        await asyncio.sleep(interval)


async def engine_quiet(timeout: float = 10) -> None:
    """Until this loop's run manager runs nothing: every run it started has ended, so no later
    turn, chunk or row can come from it (what a test asserting "nothing more happened" waits for)."""
    from runs.manager import get_run_manager

    manager = get_run_manager()

    async def running() -> list[str]:
        return list(manager.tasks)

    await eventually(running, until=lambda ids: not ids, timeout=timeout)
