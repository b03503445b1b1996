"""The asyncio Redis client every Redis user of Nexus builds its connections with."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

REDIS_MAX_CONNECTIONS = 200  # per client and process; more concurrent commands wait their turn


def redis_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """An asyncio Redis client for many concurrent sockets.

    - Its pool waits (up to 10 s) for a free connection when all are busy: redis-py's default pool
      raises ``MaxConnectionsError`` past 100, which a reconnect storm reaches.
    - A command gets one more try, on a fresh connection, when the pooled one turns out dead: after
      a Redis restart every pooled connection is, and redis-py does not retry by default.
    """
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_MAX_CONNECTIONS, timeout=10, retry=retry, **kwargs
    )
    return aioredis.Redis.from_pool(pool)
