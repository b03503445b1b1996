"""The real backends: the suite's database in CI is PostgreSQL, and the Redis channel layer
survives idling past redis-py 8's default 5 s read timeout."""

from __future__ import annotations

import asyncio

import pytest
from channels_redis.core import RedisChannelLayer
from django.db import connection

from tests.conftest import IN_CI


@pytest.mark.django_db
def test_the_suite_runs_on_postgresql_in_ci():
    if not IN_CI:
        pytest.skip("CI runs the suite on PostgreSQL; locally any database will do")
    assert connection.vendor == "postgresql"


@pytest.mark.django_db
def test_postgresql_answers(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url.replace("postgres://", "postgresql://"), connect_timeout=3) as db:
        assert db.execute("SELECT 1").fetchone() == (1,)


@pytest.mark.redis
@pytest.mark.timeout(60)
async def test_a_redis_channel_receive_survives_idling_longer_than_five_seconds(redis_url, redis_prefix):
    layer = RedisChannelLayer(hosts=[{"address": redis_url, "socket_timeout": None}], prefix=redis_prefix)
    channel = await layer.new_channel()
    receiver = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(6.5)
    assert not receiver.done(), receiver.exception() if receiver.done() else None
    await layer.send(channel, {"type": "wake.up"})
    message = await asyncio.wait_for(receiver, 5)
    assert message["type"] == "wake.up"
    await layer.flush()
