"""Redis SIGKILLed mid-reply and restarted empty on the same port."""

from __future__ import annotations

import asyncio
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

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

REPLY = words(80)


async def test_every_process_serves_again_and_no_client_silently_loses_an_event(cluster):
    made = cluster.fixtures(conversations_spec(4, scripted_agent("slow", reply=REPLY, chunks=80, delay=0.1)))
    conversations = made["conversations"]
    watchers = await open_watchers(cluster, conversations, per_conversation=2)
    quick = cluster.fixtures(
        conversations_spec(6, scripted_agent("quick", reply="short reply", chunks=3, delay=0))
    )
    try:
        for i, watcher in enumerate(watchers[::2]):
            await watcher.send("user_message", content="tell me a long story", client_message_id=f"m{i}")
        await asyncio.gather(*(w.wait_frame("streaming_chunk", timeout=15) for w in watchers))
        await asyncio.sleep(1.5)  # well into the replies

        cluster.kill("redis")
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start_service, "redis")
        restarted = time.monotonic()

        # Every web process answers /health (database, Redis, event log) again.
        while not all(cluster.health(name)[0] == 200 for name in cluster.web_names):
            assert time.monotonic() - restarted < 10, "a web process was not healthy within 10 s"
            await asyncio.sleep(0.1)
        assert all(cluster.alive(name) for name in cluster.services)

        # Every web process takes new sockets and every worker takes new runs, within 10 s: short
        # replies, one after the other, until both workers have taken one.
        owners: set[str | None] = set()
        for i, conversation in enumerate(quick["conversations"]):
            watcher = Watcher(
                conversation_id=conversation["id"], token=conversation["token"], name=f"fresh{i}"
            )
            await watcher.connect(cluster.ws_url(cluster.web_names[i % 2]))
            try:
                await watcher.wait_frame("session_state", timeout=10)
                await watcher.send("user_message", content="hello")
                finished = await watcher.wait_for(run_finished, timeout=10, what="run_finished")
            finally:
                await watcher.close()
            assert finished["status"] == "completed"
            owners.add(service_of_owner(cluster, runs_of(cluster, conversation["id"])[0]["owner"]))
            if i >= 1 and owners == set(cluster.worker_names):
                break
            await asyncio.sleep(0.5)
        assert owners == set(cluster.worker_names), f"runs after the restart went to {owners}"
        assert time.monotonic() - restarted < 10
        served_again = time.monotonic() - restarted

        # The replies in flight carry on; every client gets them whole, or is told to resync.
        await asyncio.gather(*(w.wait_for(run_finished, timeout=30, what="run_finished") for w in watchers))
    finally:
        await close_all(watchers)

    for conversation in conversations:
        runs = runs_of(cluster, conversation["id"])
        assert [r["status"] for r in runs] == ["completed"], runs
        [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
        assert (status, content) == ("complete", REPLY)
        for watcher in (w for w in watchers if w.conversation_id == conversation["id"]):
            assert watcher.violations == [], watcher.violations
            assert watcher.final[message_id]["content"] == content, watcher.name
            assert watcher.final[message_id]["status"] == "complete"
            if watcher.resyncs == 0:  # never told to resync: it must have every event
                assert watcher.text[message_id] == content, watcher.name
            assert watcher.connects == 1  # the socket itself survived the restart
    print(
        f"served again {served_again:.1f} s after Redis came back; resyncs: {[w.resyncs for w in watchers]}"
    )
