"""The ``nexus-runs`` channel: ``manage.py runworker nexus-runs`` executes runs sent by web processes.

The handler only hands the run to the process's RunManager and returns, so one worker executes
many runs at once and a long run never blocks the channel.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import AsyncConsumer

from runs.engine import get_run_manager


class RunWorkerConsumer(AsyncConsumer):
    async def run_execute(self, message: dict[str, Any]) -> None:
        await get_run_manager().launch(str(message["run_id"]))
