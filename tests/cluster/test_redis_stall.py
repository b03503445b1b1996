"""Redis stalls (SIGSTOP: the process is there, its sockets are open, it answers nothing) for a few
seconds mid-reply, then carries on (SIGCONT) with all its data. A stall is what a Redis swapping,
forking for a snapshot on a big dataset, or paused by its host looks like, and unlike a kill no
connection error tells anyone.

Afterwards: every run ends with a defined status, its reply is stored, every client (reconnecting
and resuming if it was dropped) has every event exactly once and in order, and no process crashed
or hung: every web process answers, every worker takes a new run.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from tests.cluster.conftest import (
    close_all,
    conversations_spec,
    open_watchers,
    runs_of,
    scripted_agent,
    service_of_owner,
    stored_replies,
    words,
)
from tests.cluster.wsclient import Watcher, run_finished

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(180)]

REPLY = words(60)
SHORT_STALL = 4.0  # shorter than the 5 s read timeout of Nexus's Redis clients
LONG_STALL = 8.0  # longer than it: commands time out on the client while Redis still has them
TERMINAL = {"completed", "stopped", "failed", "incomplete"}
MESSAGE_STATUS = {
    "completed": "complete",
    "stopped": "stopped",
    "failed": "error",
    "incomplete": "incomplete",
}


async def _until_finished(watcher: Watcher, ws_base: str, *, runs: int, timeout: float) -> list[dict]:
    """The ``run_finished`` data of ``runs`` runs, reconnecting (and resuming from ``last_seq``)
    whenever the server drops the socket."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    def finished(w: Watcher) -> list[dict] | None:
        frames = [f["data"] for f in w.events if f["type"] == "run_finished"]
        return frames if len(frames) >= runs else None

    while True:
        try:
            return await watcher.wait_for(
                finished, timeout=max(0.1, deadline - loop.time()), what=f"{runs} run_finished"
            )
        except ConnectionError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)
            await watcher.connect(ws_base)


async def test_a_redis_stall_mid_reply_loses_nothing_and_hangs_nothing(cluster):
    await _stall_mid_reply(cluster, SHORT_STALL)


async def test_a_long_redis_stall_mid_reply_duplicates_no_event(cluster):
    """The event log's append times out on the client (5 s) while Redis still holds the script and
    runs it once it carries on; the writer's retry carries the same batch id, so the log appends it
    once (runs/eventlog/: idempotent appends)."""
    await _stall_mid_reply(cluster, LONG_STALL)


async def test_a_message_sent_during_a_long_stall_is_answered_once_redis_carries_on(cluster):
    """The message rate limit is checked in Redis: its read timed out after 5 s and the exception
    ended the socket with 1011 (realtime/consumers.py BaseSocket.receive). It lets the frame
    through now, and the message is answered when Redis carries on."""
    redis = cluster.services["redis"].process
    assert redis is not None
    [conversation] = cluster.fixtures(
        conversations_spec(1, scripted_agent("patient", reply="worth the wait", chunks=3, delay=0))
    )["conversations"]
    [watcher] = await open_watchers(cluster, [conversation], per_conversation=1)
    try:
        redis.signal(signal.SIGSTOP)
        try:
            await watcher.send("user_message", content="anyone there?", client_message_id="during")
            await asyncio.sleep(LONG_STALL)  # the fault's length, not a wait for a result
        finally:
            redis.signal(signal.SIGCONT)
        ack = await watcher.wait_frame("ack", timeout=15, client_message_id="during")
        finished = await watcher.wait_for(run_finished, timeout=15, what="run_finished")
    finally:
        await watcher.close()
    assert finished["status"] == "completed" and finished["run_id"] == ack["data"]["run_id"]
    assert watcher.connects == 1 and watcher.violations == []
    [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
    assert (status, content) == ("complete", "worth the wait") == (status, watcher.text[message_id])
    assert not watcher.seen("error"), watcher.seen("error")


async def _stall_mid_reply(cluster, stall_seconds: float) -> None:
    redis = cluster.services["redis"].process
    assert redis is not None
    made = cluster.fixtures(
        conversations_spec(2, scripted_agent("steady", reply=REPLY, chunks=60, delay=0.05))
    )
    conversations = made["conversations"]
    watchers = await open_watchers(cluster, conversations, per_conversation=2)
    ws_of = {w.name: cluster.ws_url(w.web) for w in watchers}  # type: ignore[attr-defined]
    stalled = False
    try:
        async with asyncio.timeout(58):
            for i, watcher in enumerate(watchers[::2]):
                await watcher.send("user_message", content="a steady story", client_message_id=f"s{i}")
            await asyncio.gather(*(w.wait_frame("streaming_chunk", timeout=15) for w in watchers))

            redis.signal(signal.SIGSTOP)
            stalled = True
            # A message sent during the stall (its rate-limit check, its dispatch to a worker and
            # its events all need Redis): it is answered once Redis carries on.
            await watchers[0].send("user_message", content="and then?", client_message_id="during")
            await asyncio.sleep(stall_seconds)  # the fault's length, not a wait for a result
            redis.signal(signal.SIGCONT)
            stalled = False
            resumed = time.monotonic()

            ack = await watchers[0].wait_frame("ack", timeout=15, client_message_id="during")
            assert ack["data"]["run_id"], ack
            expected = {c["id"]: 2 if c is conversations[0] else 1 for c in conversations}
            finished = await asyncio.gather(
                *(
                    _until_finished(w, ws_of[w.name], runs=expected[w.conversation_id], timeout=30)
                    for w in watchers
                )
            )

            _check_replies(cluster, conversations, watchers, expected)
            statuses = [[f["status"] for f in frames] for frames in finished]
            print(f"runs ended {statuses}; reconnects {[w.connects - 1 for w in watchers]}")

            # No process crashed or hung: all alive, every web process healthy, and new short
            # replies run until both workers have taken one.
            assert all(cluster.alive(name) for name in cluster.services)
            while not all(cluster.health(name)[0] == 200 for name in cluster.web_names):
                assert time.monotonic() - resumed < 15, "a web process stayed unhealthy after the stall"
                await asyncio.sleep(0.2)
            quick = cluster.fixtures(
                conversations_spec(6, scripted_agent("after", reply="after the stall", chunks=2, delay=0))
            )
            owners: set[str | None] = set()
            for i, conversation in enumerate(quick["conversations"]):
                fresh = Watcher(conversation_id=conversation["id"], token=conversation["token"], name=f"f{i}")
                await fresh.connect(cluster.ws_url(cluster.web_names[i % 2]))
                try:
                    await fresh.wait_frame("session_state", timeout=10)
                    await fresh.send("user_message", content="hello again")
                    done = await fresh.wait_for(run_finished, timeout=15, what="run_finished")
                finally:
                    await fresh.close()
                assert done["status"] == "completed"
                owners.add(service_of_owner(cluster, runs_of(cluster, conversation["id"])[0]["owner"]))
                if owners == set(cluster.worker_names):
                    break
            assert owners == set(cluster.worker_names), f"runs after the stall went only to {owners}"
    finally:
        if stalled:
            redis.signal(signal.SIGCONT)
        await close_all(watchers)


def _check_replies(
    cluster, conversations: list[dict], watchers: list[Watcher], expected: dict[str, int]
) -> None:
    """Every run ended with a defined status, its reply is stored, and every client has it whole:
    each event once, in order."""
    for conversation in conversations:
        runs = runs_of(cluster, conversation["id"])
        assert len(runs) == expected[conversation["id"]], runs
        assert all(run["status"] in TERMINAL for run in runs), runs
        replies = stored_replies(cluster, conversation["id"])
        assert len(replies) == len(runs), (runs, replies)
        for run, (message_id, status, content) in zip(runs, replies, strict=True):
            assert status == MESSAGE_STATUS[run["status"]], (run, status)
            if run["status"] == "completed":
                assert content == REPLY
            for watcher in (w for w in watchers if w.conversation_id == conversation["id"]):
                assert watcher.violations == [], watcher.violations
                assert watcher.final[message_id]["content"] == content, watcher.name
                assert watcher.final[message_id]["status"] == status
                if watcher.resyncs == 0:  # never told to resync: every chunk, once, in order
                    assert watcher.text[message_id] == content, watcher.name
