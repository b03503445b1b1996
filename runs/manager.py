"""The run manager: this process's runs in flight, its control channel, heartbeat and sweeper.

A run (one agent producing one reply) is an asyncio task owned by this process's ``RunManager``,
never by a socket. The manager also owns the process's control channel (stop requests and
dispatched runs reach the owning process through it), the heartbeat of its runs, and the sweeper that
marks runs whose owner died as ``incomplete`` (``runs.sweeper``). One manager per event loop
(``get_run_manager``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
import weakref

from channels.layers import get_channel_layer
from django.conf import settings

from core.tasks import process_task
from runs import sessions, store
from runs.dispatch import (
    NO_HANDOFF,
    Claimed,
    Handoff,
    claim_run,
    dispatch_next_queued,
    parse_trigger_seq,
    read_startable,
    take_run,
)
from runs.early_start import EarlyStart
from runs.execution import Execution
from runs.store import db
from runs.sweeper import SWEEP_SECONDS, sweep_stale_runs

logger = logging.getLogger(__name__)
PROCESS_NAME = f"{socket.gethostname()}:{os.getpid()}"


class RunManager:
    """Per process (and event loop): runs in flight, the control channel, heartbeat and sweeper."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.stopping: set[str] = set()
        # Runs launched before the transaction that stores their row commits (the inline fast
        # path): a row not there yet is not a deleted one.
        self.uncommitted: set[str] = set()
        self.control_channel: str = ""
        self._background: list[asyncio.Task[None]] = []
        self._started = False
        self._start_lock = asyncio.Lock()

    async def ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            # A plain channel named for this process, not a process-local "x.y!z" one: channels_redis
            # lets one receiver at a time block on a process's local channels, and a blocked receive
            # on another prefix starves every consumer's channel in the process (and is starved).
            self.control_channel = f"nexus-owner.{uuid.uuid4().hex}"
            self._background = [
                process_task(self._control_loop(), name="runs-control"),
                process_task(self._heartbeat_loop(), name="runs-heartbeat"),
                process_task(self._sweeper_loop(), name="runs-sweeper"),
            ]
            self._started = True

    @property
    def owner_name(self) -> str:
        return f"{PROCESS_NAME}|{self.control_channel}"

    # -- launching and stopping ------------------------------------------------------------------

    async def launch(self, run_id: str, handoff: Handoff = NO_HANDOFF) -> None:
        """Start executing a queued run in this process (returns at once), with what its sender
        handed it (``runs.dispatch.Handoff``)."""
        await self.ensure_started()
        run_id = str(run_id)
        if run_id in self.tasks:
            return
        task = process_task(
            execute_run(self, run_id, handoff),
            name=f"run-{run_id}",
        )
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t: self._forget(run_id))

    def launch_claimed(self, claimed: Claimed) -> None:
        """Start executing a run this process already claimed (``runs.sending._prepare_send``)."""
        run_id = str(claimed.run.pk)
        if claimed.early is not None and claimed.early.pending:
            self.uncommitted.add(run_id)
            claimed.early.on_settled(lambda: self.uncommitted.discard(run_id))
        task = process_task(_execute(self, claimed), name=f"run-{run_id}")
        self.tasks[run_id] = task
        task.add_done_callback(lambda _t: self._forget(run_id))

    def _forget(self, run_id: str) -> None:
        self.tasks.pop(run_id, None)
        self.stopping.discard(run_id)
        self.uncommitted.discard(run_id)

    def stop_local(self, run_id: str) -> bool:
        task = self.tasks.get(str(run_id))
        if task is None or task.done():
            return False
        self.stopping.add(str(run_id))
        task.cancel()
        return True

    # -- background loops -----------------------------------------------------------------------

    async def _control_loop(self) -> None:
        layer = get_channel_layer()
        assert layer is not None  # settings.CHANNEL_LAYERS always has a default
        backoff = 0.1
        while True:
            try:
                message = await layer.receive(self.control_channel)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the layer's backend restarting: keep listening
                logger.warning("control channel receive failed (%s)", exc.__class__.__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            kind = message.get("type")
            if kind == "run.stop":
                self.stop_local(message.get("run_id", ""))
            elif kind == "run.execute":
                await self.launch(
                    message["run_id"], Handoff(trigger_seq=parse_trigger_seq(message.get("trigger_seq")))
                )

    async def _heartbeat_loop(self) -> None:
        interval = settings.NEXUS_RUN_HEARTBEAT_SECONDS
        last_beat = 0.0
        while True:
            await asyncio.sleep(min(1.0, interval))
            ids = [run_id for run_id in self.tasks if run_id not in self.uncommitted]
            if not ids:
                continue
            try:
                now = time.monotonic()
                if now - last_beat >= interval:
                    last_beat = now
                    await db(store.heartbeat)(ids)
                # Fallback for a lost stop message: the flag is in the database too; and a run
                # whose row is gone (its conversation, agent or itself deleted) stops as well.
                for run_id in await db(store.stop_requested)(ids):
                    self.stop_local(run_id)
            except Exception:
                logger.exception("heartbeat failed")

    async def _sweeper_loop(self) -> None:
        # Orphaned runs are looked for every second (one indexed query); the rest every few seconds.
        last_housekeeping = time.monotonic()
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            housekeeping = now - last_housekeeping >= min(5.0, settings.NEXUS_RUN_STALE_SECONDS / 3)
            if housekeeping:
                last_housekeeping = now
            try:
                await sweep_stale_runs(housekeeping=housekeeping)
            except Exception:
                logger.exception("sweeper failed")

    async def close(self) -> None:
        for task in [*self.tasks.values(), *self._background]:
            task.cancel()
        for task in [*self.tasks.values(), *self._background]:
            with contextlib.suppress(BaseException):
                await task


_managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunManager] = weakref.WeakKeyDictionary()


def get_run_manager() -> RunManager:
    loop = asyncio.get_running_loop()
    manager = _managers.get(loop)
    if manager is None:
        manager = _managers[loop] = RunManager()
    return manager


# --- executing a dispatched run ------------------------------------------------------------------


async def execute_run(
    manager: RunManager,
    run_id: str,
    handoff: Handoff = NO_HANDOFF,
) -> None:
    """Claim a queued run and execute it. ``handoff.start``: its sender saw it start at once (nothing else
    running in its conversation), so the provider is asked while the claim commits; the run holds
    its events and writes nothing until it has, and vanishes if another took it or it was stopped."""
    if handoff.start:
        ready = await db(read_startable)(run_id, handoff)
        if ready is not None:
            ready.early = EarlyStart.after_claim(
                db(take_run)(run_id, manager.owner_name, touch=handoff.touch), run_id
            )
            await _execute(manager, ready)
            return
    claimed = await db(claim_run)(run_id, manager.owner_name, handoff)
    if claimed is not None:
        await _execute(manager, claimed)


async def _execute(manager: RunManager, claimed: Claimed) -> None:
    execution = Execution(manager, claimed)
    try:
        await execution.run()
    finally:
        # A paused run holds its conversation still: nothing follows it until it resumes and ends.
        if not execution.abandoned and not execution.paused:
            with contextlib.suppress(Exception):
                await asyncio.shield(_after_run(claimed))


async def _after_run(claimed: Claimed) -> None:
    if not await sessions.after_run(run_id=str(claimed.run.pk), conversation_id=str(claimed.conversation.pk)):
        await dispatch_next_queued(claimed.conversation.pk)
