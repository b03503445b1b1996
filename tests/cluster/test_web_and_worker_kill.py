"""A daphne process or a run worker SIGKILLed mid-reply."""

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


async def test_clients_of_a_killed_daphne_resume_on_the_other_with_nothing_lost_or_doubled(cluster):
    reply = words(100)
    made = cluster.fixtures(
        conversations_spec(3, scripted_agent("slow", reply=reply, chunks=100, delay=0.08))
    )
    conversations = made["conversations"]
    # Four sockets per user: two on web1 (killed), two on web2.
    watchers = await open_watchers(
        cluster, conversations, per_conversation=4, web_of=lambda i, j: "web1" if j < 2 else "web2"
    )
    try:
        for i, conversation in enumerate(conversations):
            sender = next(w for w in watchers if w.conversation_id == conversation["id"] and w.web == "web2")
            await sender.send("user_message", content="a long story please", client_message_id=f"d{i}")
        await asyncio.gather(*(w.wait_frame("streaming_chunk", timeout=15) for w in watchers))
        await asyncio.sleep(1.5)

        cluster.kill("web1")
        killed = time.monotonic()
        orphans = [w for w in watchers if w.web == "web1"]
        await asyncio.gather(
            *(
                w.wait_for(lambda w: not w.connected, timeout=5, what="close", fail_on_close=False)
                for w in orphans
            )
        )
        assert not any(run_finished(w) for w in orphans), "the replies ended before the kill"

        refused = 0

        async def resume(watcher: Watcher) -> None:
            # Until web1's liveness key lapses its sockets still count against the user's 5: the
            # first tries may get 4004, as any client that reconnects at once can; it retries.
            nonlocal refused
            while True:
                await watcher.connect(cluster.ws_url("web2"))  # ?last_seq=<the last one it saw>
                watcher.web = "web2"
                try:
                    await watcher.wait_frame("session_state", after=len(watcher.frames), timeout=10)
                    return
                except ConnectionError:
                    assert watcher.close_code == 4004, watcher.close_code
                    assert time.monotonic() - killed < 10, "still refused 10 s after the kill"
                    refused += 1
                    await asyncio.sleep(0.5)

        await asyncio.gather(*(resume(w) for w in orphans))
        resumed = time.monotonic() - killed
        assert resumed < 10
        await asyncio.gather(*(w.wait_for(run_finished, timeout=30, what="run_finished") for w in watchers))
    finally:
        await close_all(watchers)

    for conversation in conversations:
        runs = runs_of(cluster, conversation["id"])
        assert [r["status"] for r in runs] == ["completed"], runs  # one run, never restarted
        [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
        assert (status, content) == ("complete", reply)
        for watcher in (w for w in watchers if w.conversation_id == conversation["id"]):
            assert watcher.violations == [], watcher.violations
            assert watcher.resyncs == 0, watcher.name
            assert watcher.text[message_id] == reply, watcher.name  # every chunk exactly once
            assert watcher.final[message_id]["content"] == reply
            seqs = [e["seq"] for e in watcher.events]
            assert seqs == sorted(set(seqs))
    print(f"the orphaned sockets resumed on web2 {resumed:.2f} s after the kill ({refused} tries refused)")


async def test_a_killed_worker_s_reply_ends_incomplete_within_15_s_and_the_other_worker_takes_new_runs(
    cluster,
):
    reply = words(250)
    made = cluster.fixtures(conversations_spec(4, scripted_agent("slow", reply=reply, chunks=250, delay=0.1)))
    conversations = made["conversations"]
    watchers = await open_watchers(cluster, conversations, per_conversation=1)
    try:
        for i, watcher in enumerate(watchers):
            await watcher.send("user_message", content="go", client_message_id=f"w{i}")
        await asyncio.gather(*(w.wait_frame("streaming_chunk", timeout=15) for w in watchers))
        owners = {
            c["id"]: service_of_owner(cluster, runs_of(cluster, c["id"])[0]["owner"]) for c in conversations
        }
        victim = owners[conversations[0]["id"]]
        survivor = next(name for name in cluster.worker_names if name != victim)
        await asyncio.sleep(2.5)  # past the first checkpoint (replies are stored once a second)

        cluster.kill(victim)
        killed = time.monotonic()
        orphaned = [w for w in watchers if owners[w.conversation_id] == victim]
        await asyncio.gather(*(w.wait_for(run_finished, timeout=20, what="run_finished") for w in orphaned))
        declared = time.monotonic() - killed
        assert declared <= 15, f"incomplete only {declared:.1f} s after the worker died"
        for watcher in orphaned:
            assert run_finished(watcher)["status"] == "incomplete"
            [(message_id, status, content)] = stored_replies(cluster, watcher.conversation_id)
            assert status == "incomplete"
            assert watcher.final[message_id]["status"] == "incomplete"
            assert watcher.final[message_id]["content"] == content
            assert content and reply.startswith(content), (content, len(watcher.text[message_id]), declared)
            assert watcher.text[message_id].startswith(content)  # it saw at least what was kept
            assert watcher.violations == []

        # New runs, in the orphaned conversation too, go to the surviving worker and complete.
        cluster.sql(
            "update agents_agent set config = %s where id = %s",
            ('{"reply": "back again", "chunks": 2}', made["agents"]["slow"]),
        )
        await orphaned[0].send("user_message", content="again", client_message_id="after-kill")
        await orphaned[0].wait_for(
            lambda w: len(w.seen("run_finished")) == 2, timeout=60, what="the second run_finished"
        )
        second = runs_of(cluster, orphaned[0].conversation_id)[-1]
        assert second["status"] == "completed"
        assert service_of_owner(cluster, second["owner"]) == survivor
        for watcher in watchers:
            if watcher not in orphaned:
                await watcher.wait_for(run_finished, timeout=60, what="run_finished")
                assert run_finished(watcher)["status"] == "completed"
    finally:
        await close_all(watchers)
    print(f"run_finished(incomplete) {declared:.1f} s after the worker was killed")
