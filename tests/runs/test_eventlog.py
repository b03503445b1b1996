"""The event log, both implementations, against the same contract (Redis is the real server)."""

from __future__ import annotations

import asyncio

import pytest

from runs.domain_events import Info, RunStarted, StreamingChunk
from runs.event_encoding import encode_event, event
from runs.eventlog.base import BATCH_WRITERS, RESTART_GAP, StaleBatch
from runs.eventlog.memory_log import MemoryEventLog
from runs.eventlog.redis_log import RedisEventLog
from runs.events import EventWriter


@pytest.fixture(params=["memory", "redis"])
async def log(request):
    if request.param == "memory":
        instance = MemoryEventLog(maxlen=50, ttl=3600)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        instance = RedisEventLog(url=url, prefix=prefix, maxlen=50, ttl=3600)
    yield instance
    if isinstance(instance, RedisEventLog):
        keys = await instance._redis.keys(f"{instance.prefix}:*")
        if keys:
            await instance._redis.delete(*keys)
    await instance.close()


def payload(n: int) -> bytes:
    return b'{"type":"streaming_chunk","timestamp":"t","data":{"n":%d}}' % n


async def test_seqs_are_strictly_increasing_and_replay_is_exact(log):
    first = await log.append("c1", [payload(1), payload(2)])
    second = await log.append("c1", [payload(3)])
    assert (first, second) == (1, 3)
    replay = await log.read_after("c1", 1)
    assert replay.covered and [e.seq for e in replay.events] == [2, 3]
    assert replay.events[0].payload == payload(2)
    assert (await log.read_after("c1", 3)).covered
    assert (await log.read_after("c1", 3)).events == []
    assert await log.last_seq("c1") == 3
    assert (await log.append("c2", [payload(1)])) == 1  # per conversation


async def test_each_logged_event_keeps_its_kind_beside_its_payload(log):
    """Readers (replay, live listeners, the firehose) learn an event's kind without its payload."""
    live: list[tuple[int, str]] = []
    log.watch("k1", lambda _cid, events: live.extend((e.seq, e.kind) for e in events))
    firehose: list[tuple[int, str]] = []
    log.watch_all(lambda cid, _owner, events: firehose.extend((e.seq, e.kind) for e in events if cid == "k1"))
    if isinstance(log, RedisEventLog):
        # Watching starts where the tail finds the streams' ends, which it reads in a task of its
        # own: a write before that is before the watch (it is read back, not relayed live).
        async with asyncio.timeout(5):
            while log._firehose_cursor == "$" or any(cursor < 0 for cursor in log._cursors.values()):
                await asyncio.sleep(0.01)
    writer = EventWriter(log, "k1", owner_id=None, floor=0)
    writer.emit(RunStarted(run_id="r1", agent_id="a1", message_id="m1"))
    writer.emit_chunk(message_id="m1", agent_id="a1", chunk="Hello")
    writer.emit(Info(code="tool_round_limit", message="Tool round limit reached."))
    await writer.flush()
    # Given kinds win over the payload's; without them the kind is read from the payload.
    await log.append("k1", [payload(4)], kinds=["agent_message"])
    await log.append("k1", [payload(5)])
    expected = [
        (1, "run_started"),
        (2, "streaming_chunk"),
        (3, "info"),
        (4, "agent_message"),
        (5, "streaming_chunk"),
    ]
    assert [(e.seq, e.kind) for e in (await log.read_after("k1", 0)).events] == expected
    async with asyncio.timeout(5):
        while len(live) < 5 or len(firehose) < 5:
            await asyncio.sleep(0.01)
    assert live == expected and firehose == expected


async def test_a_legacy_redis_entry_without_a_kind_is_read_from_its_payload(redis_url, redis_prefix):
    """An entry appended before the log kept kinds (no ``k`` field) still has its kind."""
    log = RedisEventLog(url=redis_url, prefix=redis_prefix, maxlen=50, ttl=3600)
    try:
        chunk = encode_event(event(StreamingChunk(message_id="m", agent_id="a", chunk='"run_finished"')))
        await log._redis.xadd(log._stream_key("old"), {"e": chunk, "b": len(chunk)}, id="1-0")
        await log._redis.set(log._counter_key("old"), 1)
        [logged] = (await log.read_after("old", 0)).events
        assert (logged.seq, logged.kind, logged.payload) == (1, "streaming_chunk", chunk)
    finally:
        keys = await log._redis.keys(f"{redis_prefix}:*")
        if keys:
            await log._redis.delete(*keys)
        await log.close()


async def test_a_seq_beyond_the_log_or_trimmed_away_is_not_covered(log):
    await log.append("c1", [payload(i) for i in range(300)])
    assert not (await log.read_after("c1", 5000)).covered  # the client knows more than the log
    assert not (await log.read_after("c1", 1)).covered  # trimmed (maxlen 50)
    recent = await log.read_after("c1", 290)
    assert recent.covered and [e.seq for e in recent.events] == list(range(291, 301))


async def test_a_lost_counter_restarts_far_above_what_the_writer_knew(log):
    first = await log.append("fresh", [payload(1)], floor=42)
    assert first == 42 + RESTART_GAP + 1
    assert not (await log.read_after("fresh", 42)).covered  # readers resync


async def test_a_batch_appended_again_is_logged_once_with_the_first_appends_seqs(log):
    """A writer retrying an append that did reach the log (its reply was lost) gets the seqs of the
    first append, even after another writer appended in between; nothing is logged twice."""
    assert await log.append("c1", [payload(1), payload(2)], batch_id=("w", 1)) == 1
    assert await log.append("c1", [payload(9)], batch_id=("v", 1)) == 3  # another writer
    assert await log.append("c1", [payload(1), payload(2)], batch_id=("w", 1)) == 1  # the retry
    assert await log.append("c1", [payload(3)], floor=2, batch_id=("w", 2)) == 4
    assert await log.append("c1", [payload(3)], floor=2, batch_id=("w", 2)) == 4
    with pytest.raises(StaleBatch):  # older than the writer's last: never appended again
        await log.append("c1", [payload(1), payload(2)], batch_id=("w", 1))
    assert await log.append("c2", [payload(1)], batch_id=("w", 1)) == 1  # per conversation
    replay = await log.read_after("c1", 0)
    assert [(e.seq, e.payload) for e in replay.events] == [
        (1, payload(1)),
        (2, payload(2)),
        (3, payload(9)),
        (4, payload(3)),
    ]
    assert await log.last_seq("c1") == 4


async def test_the_log_remembers_its_last_writers_batches_and_a_bounded_number(log):
    await log.append("c1", [payload(0)], batch_id=("first", 1))
    for n in range(BATCH_WRITERS):
        await log.append("c1", [payload(n)], batch_id=(f"other-{n}", 1))
    assert await log.append("c1", [payload(0)], batch_id=("first", 1)) == 1
    for n in range(3 * BATCH_WRITERS):
        await log.append("c1", [payload(n)], batch_id=(f"later-{n}", 1))
    if isinstance(log, RedisEventLog):
        held = sum([await log._redis.hlen(key) for key in log._batches_keys("c1")])
    else:
        held = len(log._streams["c1"].batches)
    assert BATCH_WRITERS <= held <= 2 * BATCH_WRITERS
    assert await log.last_seq("c1") == 1 + 4 * BATCH_WRITERS


async def test_live_delivery_reaches_watchers_in_order(log):
    got: list[int] = []
    done = asyncio.Event()

    def listener(cid, events):
        got.extend(e.seq for e in events)
        if got and got[-1] >= 20:
            done.set()

    log.watch("live", listener)
    await asyncio.sleep(0.2)  # the Redis tail starts
    for i in range(20):
        await log.append("live", [payload(i)])
    await asyncio.wait_for(done.wait(), 5)
    assert got == list(range(1, 21))
    log.unwatch("live", listener)


async def test_the_firehose_sees_every_conversation_with_its_owner(log):
    seen: list[tuple[str, int | None, int]] = []
    done = asyncio.Event()

    def listener(cid, owner, events):
        seen.extend((cid, owner, e.seq) for e in events)
        if len(seen) >= 2:
            done.set()

    log.watch_all(listener)
    await asyncio.sleep(0.2)
    await log.append("a", [payload(1)], owner_id=7)
    await log.append("b", [payload(1)], owner_id=8)
    await asyncio.wait_for(done.wait(), 5)
    assert sorted(seen) == [("a", 7, 1), ("b", 8, 1)]
    log.unwatch_all(listener)


@pytest.mark.timeout(30)
async def test_the_redis_tail_survives_idling_longer_than_five_seconds(redis_url, redis_prefix):
    log = RedisEventLog(url=redis_url, prefix=redis_prefix, maxlen=50, ttl=60)
    got: list[int] = []
    arrived = asyncio.Event()
    log.watch("idle", lambda cid, events: (got.extend(e.seq for e in events), arrived.set()))
    await asyncio.sleep(6.5)
    await log.append("idle", [payload(1)])
    await asyncio.wait_for(arrived.wait(), 5)
    assert got == [1]
    await log.close()


async def test_the_writer_tells_when_what_was_emitted_so_far_is_logged(log):
    writer = EventWriter(log, "w1", owner_id=None, floor=0)
    writer.emit(Info(code="n", message="1"))
    writer.emit(Info(code="n", message="2"))
    both = writer.logged()
    writer.emit(Info(code="n", message="3"))  # after the call: not waited for
    assert await both == 2
    await writer.flush()
    assert writer.last_seq == 3
    # With an append in flight and nothing queued: the append under way is what it waits for.
    writer.emit(Info(code="n", message="4"))
    await asyncio.sleep(0)
    in_flight = writer.logged()
    writer.emit(Info(code="n", message="5"))
    assert await in_flight == 4
    assert await writer.flush() == 5
    # Nothing emitted since: at once, with the last seq.
    idle = writer.logged()
    assert idle.done() and idle.result() == 5
    assert [e.seq for e in (await log.read_after("w1", 0)).events] == [1, 2, 3, 4, 5]
