"""The rate-limit primitive: N hits per sliding window per key, shared by every process.

Redis (one atomic Lua script per hit) when ``REDIS_URL`` is set, in memory otherwise (one
process). Used for WebSocket messages per user (``realtime.limits``) and runs started per user
(``runs.quotas``). A refused hit is not counted, and says how long until the oldest counted hit
leaves the window (``retry_after``).

One limiter per event loop: the Redis client is bound to the loop it was made on, and the
in-memory windows of one loop (one server process) are the process's.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import weakref
from collections import deque
from dataclasses import dataclass

from django.conf import settings

from core.redis import redis_client

# sliding window log: KEYS[1] zset; ARGV now_ms, window_ms, limit, member
_RATE_SCRIPT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + tonumber(ARGV[2]) - now}
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    retry_after: float = 0.0  # seconds until a hit would be counted (0 when allowed)


class RateLimiter:
    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        """Count one hit against ``key`` if fewer than ``limit`` were counted in the last
        ``window`` seconds."""
        raise NotImplementedError


class MemoryRateLimiter(RateLimiter):
    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        now = time.monotonic()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - window:
            hits.popleft()
        if len(hits) >= limit:
            return RateDecision(False, round(hits[0] + window - now, 3))
        hits.append(now)
        return RateDecision(True)


class RedisRateLimiter(RateLimiter):
    """Keys are ``<prefix>:<key>``."""

    def __init__(self, *, url: str, prefix: str) -> None:
        self.prefix = prefix
        self._redis = redis_client(url, socket_timeout=5, socket_connect_timeout=5)
        self._script = self._redis.register_script(_RATE_SCRIPT)

    async def hit(self, key: str, *, limit: int, window: float) -> RateDecision:
        window_ms = max(1, int(window * 1000))
        allowed, retry_ms = await self._script(
            keys=[f"{self.prefix}:{key}"],
            args=[int(time.time() * 1000), window_ms, limit, uuid.uuid4().hex],
        )
        return RateDecision(bool(allowed), round(max(0, int(retry_ms)) / 1000, 3))


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RateLimiter] = weakref.WeakKeyDictionary()


def get_rate_limiter() -> RateLimiter:
    """This event loop's limiter: on Redis when ``REDIS_URL`` is set, else in memory."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        if settings.REDIS_URL:
            limiter = RedisRateLimiter(url=settings.REDIS_URL, prefix=settings.NEXUS_REDIS_PREFIX)
        else:
            limiter = MemoryRateLimiter()
        _limiters[loop] = limiter
    return limiter
