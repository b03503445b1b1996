"""Per-user WebSocket limits shared by every socket and process: sockets per user and client
messages per minute. Redis (atomic Lua) when ``REDIS_URL`` is set, in memory otherwise. The
messages-per-minute window is the shared rate-limit primitive of ``core.ratelimit``."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from typing import Any, cast

from django.conf import settings
from redis.exceptions import RedisError

from core.ratelimit import RateDecision, get_rate_limiter
from core.redis import redis_client
from core.tasks import process_task

logger = logging.getLogger(__name__)

SOCKET_STALE_SECONDS = 120.0  # a socket entry not refreshed this long belongs to a dead process
# Each process also keeps a key alive while it runs; the sockets of a process whose key lapsed
# (SIGKILLed, crashed) stop counting at once, so its users can reconnect elsewhere within seconds.
PROCESS_BEAT_SECONDS = 2.0
PROCESS_TTL_SECONDS = 6

_SOCKET_SCRIPT = """
-- KEYS[1] user's sockets zset, KEYS[2] set of users with sockets, KEYS[3] this process's key;
-- ARGV now, stale, limit, "<process>/<socket>", user, process key prefix, process key ttl.
-- (Reads other processes' keys by name: fine on one Redis, not on Redis Cluster.)
local now = tonumber(ARGV[1])
redis.call('SET', KEYS[3], 1, 'EX', ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local process = string.match(member, '^([^/]+)/')
  if process and redis.call('EXISTS', ARGV[6] .. process) == 0 then
    redis.call('ZREM', KEYS[1], member)
  end
end
if redis.call('ZSCORE', KEYS[1], ARGV[4]) == false and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return -1
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('EXPIRE', KEYS[1], math.floor(tonumber(ARGV[2]) * 2))
redis.call('SADD', KEYS[2], ARGV[5])
return redis.call('ZCARD', KEYS[1])
"""


class Limits:
    async def socket_open(self, user_id: int, socket_id: str) -> bool:
        raise NotImplementedError

    async def socket_refresh(self, user_id: int, socket_id: str) -> None:
        raise NotImplementedError

    async def socket_close(self, user_id: int, socket_id: str) -> None:
        raise NotImplementedError

    per_minute: int

    async def message_hit(self, user_id: int) -> RateDecision:
        """One client message of ``user_id`` against its per-minute budget (all sockets, all
        processes)."""
        try:
            return await get_rate_limiter().hit(f"ws:rate:{user_id}", limit=self.per_minute, window=60)
        except RedisError as exc:
            # Redis stalled (a read times out after 5 s) or down: the frame goes through rather
            # than the exception ending the socket with 1011; what the frame does reports its own
            # error if it needs Redis too.
            logger.warning("message rate limit not checked, Redis unavailable: %s", exc)
            return RateDecision(True)

    async def sockets_per_user(self) -> dict[str, int]:
        raise NotImplementedError


class MemoryLimits(Limits):
    def __init__(self, *, max_sockets: int, per_minute: int) -> None:
        self.max_sockets = max_sockets
        self.per_minute = per_minute
        self._sockets: dict[int, set[str]] = {}

    async def socket_open(self, user_id: int, socket_id: str) -> bool:
        sockets = self._sockets.setdefault(user_id, set())
        if socket_id not in sockets and len(sockets) >= self.max_sockets:
            return False
        sockets.add(socket_id)
        return True

    async def socket_refresh(self, user_id: int, socket_id: str) -> None:
        return None

    async def socket_close(self, user_id: int, socket_id: str) -> None:
        sockets = self._sockets.get(user_id)
        if sockets is not None:
            sockets.discard(socket_id)
            if not sockets:
                del self._sockets[user_id]

    async def sockets_per_user(self) -> dict[str, int]:
        return {str(user): len(sockets) for user, sockets in self._sockets.items()}


class RedisLimits(Limits):
    def __init__(self, *, url: str, prefix: str, max_sockets: int, per_minute: int) -> None:
        self.max_sockets = max_sockets
        self.per_minute = per_minute
        self.prefix = prefix
        self._redis = redis_client(url, socket_timeout=5, socket_connect_timeout=5)
        self._socket = self._redis.register_script(_SOCKET_SCRIPT)
        self._process = uuid.uuid4().hex
        self._process_prefix = f"{prefix}:ws:process:"
        self._beat: asyncio.Task[None] | None = None

    def _sockets_key(self, user_id: int) -> str:
        return f"{self.prefix}:ws:sockets:{user_id}"

    def _member(self, socket_id: str) -> str:
        return f"{self._process}/{socket_id}"

    async def _beat_loop(self) -> None:
        key = self._process_prefix + self._process
        while True:
            await asyncio.sleep(PROCESS_BEAT_SECONDS)
            try:
                await self._redis.set(key, 1, ex=PROCESS_TTL_SECONDS)
            except Exception:  # Redis restarting: the next beat (or socket_open) sets it again
                pass

    async def socket_open(self, user_id: int, socket_id: str) -> bool:
        if self._beat is None or self._beat.done():
            self._beat = process_task(self._beat_loop(), name="limits-beat")
        result = await self._socket(
            keys=[
                self._sockets_key(user_id),
                f"{self.prefix}:ws:users",
                self._process_prefix + self._process,
            ],
            args=[
                time.time(),
                SOCKET_STALE_SECONDS,
                self.max_sockets,
                self._member(socket_id),
                user_id,
                self._process_prefix,
                PROCESS_TTL_SECONDS,
            ],
        )
        return int(result) >= 0

    async def socket_refresh(self, user_id: int, socket_id: str) -> None:
        await self._redis.zadd(self._sockets_key(user_id), {self._member(socket_id): time.time()})

    async def socket_close(self, user_id: int, socket_id: str) -> None:
        await self._redis.zrem(self._sockets_key(user_id), self._member(socket_id))

    async def sockets_per_user(self) -> dict[str, int]:
        users = await self._redis.smembers(f"{self.prefix}:ws:users")
        result: dict[str, int] = {}
        now = time.time()
        for raw in users:
            user = cast(bytes, raw).decode()  # the client does not decode
            count = await self._redis.zcount(self._sockets_key(int(user)), now - SOCKET_STALE_SECONDS, "+inf")
            if count:
                result[user] = int(count)
            else:
                await self._redis.srem(f"{self.prefix}:ws:users", raw)
        return result


_limits: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Limits] = weakref.WeakKeyDictionary()


def get_limits() -> Limits:
    loop = asyncio.get_running_loop()
    limits = _limits.get(loop)
    if limits is None:
        kwargs: dict[str, Any] = {
            "max_sockets": settings.NEXUS_WS_MAX_SOCKETS_PER_USER,
            "per_minute": settings.NEXUS_WS_MESSAGES_PER_MINUTE,
        }
        if settings.REDIS_URL:
            limits = RedisLimits(url=settings.REDIS_URL, prefix=settings.NEXUS_REDIS_PREFIX, **kwargs)
        else:
            limits = MemoryLimits(**kwargs)
        _limits[loop] = limits
    return limits
