"""A Redis that stalls (SIGSTOP: its sockets stay open, it answers nothing) while the event log
appends: the client times out on a script Redis still holds and runs once it carries on, and the
writer retries the same batch. Each event must be logged once, in order (the log is a private
redis-server, so stalling it disturbs no one else)."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import signal

import pytest
import redis.asyncio as aioredis

from runs.domain_events import Info
from runs.eventlog.redis_log import RedisEventLog
from runs.events import EventWriter
from tests.conftest import IN_CI
from tests.procs import Process, free_port

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]


@pytest.fixture
async def private_redis(tmp_path):
    binary = shutil.which("redis-server")
    if binary is None:
        if IN_CI:
            pytest.fail("redis-server is not installed; it is mandatory in CI")
        pytest.skip("redis-server is not installed")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = Process(args, env={}, log_path=tmp_path / "redis.log", cwd=tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    client = aioredis.Redis.from_url(url)
    try:
        async with asyncio.timeout(15):
            while True:
                try:
                    await client.ping()
                    break
                except Exception:
                    assert server.alive(), server.output()
                    await asyncio.sleep(0.05)
        yield server, url
    finally:
        await client.aclose()
        server.kill(signal.SIGCONT)
        server.stop()


async def test_a_batch_retried_after_a_stalled_redis_ran_it_is_logged_once(private_redis, caplog):
    server, url = private_redis
    log = RedisEventLog(url=url, prefix="stall", maxlen=1000, ttl=600, socket_timeout=0.5)
    writer = EventWriter(log, "c1", owner_id=None, floor=0)
    caplog.set_level(logging.WARNING, logger="runs.events")
    try:
        assert await writer.emit_now(Info(code="n", message="0")) == 1
        server.kill(signal.SIGSTOP)
        try:
            for n in range(1, 4):
                writer.emit(
                    Info(code="n", message=str(n))
                )  # the first goes out at once, the rest queue behind it
            async with asyncio.timeout(20):  # the append timed out on the client: Redis holds it
                while not any("retrying" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.05)
        finally:
            server.kill(signal.SIGCONT)
        last = await asyncio.wait_for(writer.flush(), 20)
        replay = await log.read_after("c1", 0)
    finally:
        await log.close()
    logged = [(e.seq, int(json.loads(e.payload)["data"]["message"])) for e in replay.events]
    assert logged == [(1, 0), (2, 1), (3, 2), (4, 3)]  # each event once, in order
    assert last == replay.last_seq == 4
