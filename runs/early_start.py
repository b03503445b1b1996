"""The early start: a run that asks its provider before the write that starts it has committed.

Time to first token is the time from a person's message to the provider's request. Two writes
would stand in between if a run waited for them: the send's transaction (inline: it creates the run
already claimed by this process, ``runs.sending``) and, on workers, the claim (``runs.dispatch``:
queued -> running). A run whose sender saw nothing else running in its conversation does not wait:
it asks its provider at once, and an ``EarlyStart`` stands for the write still under way.

Until that write has committed the run is a guess: its events are held in its writer (nothing is
logged: watchers must not see a reply to a message that may not exist), it writes nothing to the
database, and this process's heartbeat leaves it alone. Then either
- the write committed (``confirm``, or the claim took the run): the held events go out in order
  and the run carries on as any other; or
- it did not (the send failed, another process took the run, it was stopped first): the run is
  abandoned, its task cancelled; it never existed, so it logs and stores nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from runs.events import EventWriter

logger = logging.getLogger(__name__)


class EarlyStart:
    """The pending start of one run launched early (see the module): settles once, True if it
    committed, False if the run is to be abandoned."""

    __slots__ = ("_committed",)

    def __init__(self) -> None:
        self._committed: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    @classmethod
    def after_claim(cls, claim: Awaitable[bool], run_id: str) -> EarlyStart:
        """On a worker: the start commits when the claim (``runs.dispatch.take_run``), run now
        beside the provider's request, takes the run; it fails if the claim does not or raises."""
        early = cls()
        committed = early._committed
        taking = asyncio.ensure_future(claim)

        def taken(task: asyncio.Future[bool]) -> None:
            if not task.cancelled() and task.exception() is not None:
                logger.error("run %s could not be claimed", run_id, exc_info=task.exception())
            committed.set_result(not task.cancelled() and task.exception() is None and task.result())

        taking.add_done_callback(taken)
        return early

    @property
    def pending(self) -> bool:
        return not self._committed.done()

    def confirm(self) -> None:
        """Inline: the send committed and its ``user_message`` is logged; the run may go on."""
        self._committed.set_result(True)

    def fail(self) -> None:
        """The send failed before it committed (no-op once settled): the run is abandoned."""
        if not self._committed.done():
            self._committed.set_result(False)

    def on_settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the start committed or failed."""
        self._committed.add_done_callback(lambda _f: callback())

    def hold(self, writer: EventWriter, abandon: Callable[[], None]) -> None:
        """Hold the run's events until the start commits, then release them; if it fails, call
        ``abandon`` instead (the held events are never logged)."""
        writer.hold()

        def settled(future: asyncio.Future[bool]) -> None:
            if not future.result():
                abandon()
                return
            writer.release()

        self._committed.add_done_callback(settled)

    async def committed(self) -> bool:
        """Wait for the start: True if it committed. Shielded: a cancelled waiter (the run being
        stopped) leaves the outcome to the others."""
        return await asyncio.shield(self._committed)
