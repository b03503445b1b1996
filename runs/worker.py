"""The ``nexus-runs`` channel: ``manage.py runworker nexus-runs`` executes runs sent by web processes.

The handler only hands the run to the process's RunManager and returns, so one worker executes
many runs at once and a long run never blocks the channel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from channels.consumer import AsyncConsumer
from channels.worker import Worker

from knowledge import tasks as ingest_tasks
from runs.dispatch import Handoff
from runs.manager import get_run_manager

logger = logging.getLogger(__name__)


class RunWorkerConsumer(AsyncConsumer):
    # Messages arrive through the worker's listener, never on a channel of the instance's own.
    channel_layer_alias = None  # type: ignore[assignment]  # channels takes None (no layer); its stubs say str

    async def run_execute(self, message: dict[str, Any]) -> None:
        await get_run_manager().launch(str(message["run_id"]), Handoff.from_message(message))

    async def ingest_execute(self, message: dict[str, Any]) -> None:
        """A knowledge ingest task (knowledge/tasks.py): run in this process, owned by it; the
        manager is started for its sweeper (which recovers tasks of dead workers)."""
        await get_run_manager().ensure_started()
        ingest_tasks.launch(str(message.get("task_id", "")))


class RunWorker(Worker):
    """channels' ``Worker``, except that losing the channel layer (Redis restarting) does not end
    the process: the listener waits and listens again, and the runs in flight carry on. The run
    manager starts with the worker, so its sweeper (stale runs, stale ingest tasks) runs in every
    worker from the start, not only once a run arrives."""

    async def handle(self) -> None:
        await get_run_manager().ensure_started()
        await super().handle()

    async def listener(self, channel: str) -> None:
        backoff = 0.1
        while True:
            try:
                message = await self.channel_layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("channel layer receive failed (%s); retrying", exc.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.1
            if not message.get("type"):
                logger.warning("worker message without a type ignored")
                continue
            queue = self.get_or_create_application_instance(channel, {"type": "channel", "channel": channel})
            await queue.put(message)
