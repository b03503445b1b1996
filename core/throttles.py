"""Scoped throttles on the shared cache (Redis when REDIS_URL is set): every process shares one budget.

DRF's own ``SimpleRateThrottle`` reads a history list, appends and writes it back: two processes
(or two threads) racing lose each other's requests. These throttles are exact sliding windows whose
check-and-count is one atomic step:

- on Django's Redis cache: a sorted set of request times per identity, trimmed, counted and added to
  by one Lua script, timed by the Redis server's clock (no skew between web processes);
- on any other cache (the in-memory default, one process): N *slots* per identity; a request claims
  a free slot with ``cache.add`` (atomic) and the slot expires one period later.

A refused request is not counted, and gets ``Retry-After``: the time until the oldest counted
request leaves the window. Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
(``NEXUS_THROTTLE_*``), read on every request so they can be changed in tests.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from typing import ClassVar

import redis
from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache
from django.http import HttpRequest
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# KEYS[1]: the window's sorted set. ARGV: window (ms), limit, a unique member.
# Returns {1, 0} when counted, {0, ms until the oldest request leaves the window} when refused.
_SLIDING_WINDOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + window - now}
"""


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/min"`` -> ``(10, 60)``: requests per period in seconds."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period[0]]


def _redis_client() -> redis.Redis | None:
    """The raw client of Django's Redis cache, or None for any other cache backend."""
    backend = caches["default"]
    return backend._cache.get_client(write=True) if isinstance(backend, RedisCache) else None


def hit(key: str, *, limit: int, period: int) -> float | None:
    """Count one request against ``key`` if it fits: None when counted, else seconds to wait."""
    client = _redis_client()
    if client is not None:
        script = client.register_script(_SLIDING_WINDOW)
        counted, wait_ms = script(keys=[cache.make_key(key)], args=[period * 1000, limit, uuid.uuid4().hex])
        return None if int(counted) else max(0.0, int(wait_ms) / 1000)
    return _hit_slots(key, limit=limit, period=period)


def _hit_slots(key: str, *, limit: int, period: int) -> float | None:
    keys = [f"{key}:{slot}" for slot in range(limit)]
    now = time.time()
    for _ in range(2):  # a second look: a slot may have expired, or been lost to a racer
        taken = cache.get_many(keys)
        for slot in keys:
            if slot not in taken and cache.add(slot, now, timeout=period):
                return None
    oldest = min((float(value) for value in taken.values()), default=now)
    return max(0.0, oldest + period - now)


class SharedRateThrottle(BaseThrottle):
    """N requests per period per identity, shared by every process using the cache."""

    scope: ClassVar[str] = ""
    per: ClassVar[str] = "user"  # "user" (the user; the IP when anonymous) or "ip"
    methods: ClassVar[frozenset[str] | None] = None  # None: every method

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def rate(self) -> tuple[int, int] | None:
        raw = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        # DRF's stubs type the rates as numbers; they are "N/period" strings
        return parse_rate(raw) if raw else None  # type: ignore[arg-type]

    def identity(self, request: Request) -> str:
        user = getattr(request, "user", None)
        if self.per == "user" and user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        return f"ip:{self.get_ident(request)}"

    def allow_request(self, request: Request, view: APIView) -> bool:
        rate = self.rate()
        if rate is None or (self.methods is not None and request.method not in self.methods):
            return True
        limit, period = rate
        self.wait_seconds = hit(f"throttle:{self.scope}:{self.identity(request)}", limit=limit, period=period)
        return self.wait_seconds is None

    def wait(self) -> float | None:
        return None if self.wait_seconds is None else max(1.0, math.ceil(self.wait_seconds))


class LoginThrottle(SharedRateThrottle):
    """``POST /api/auth/login``: per client IP (seed 001: 10/min), one budget with the login pages."""

    scope = "login"
    per = "ip"


def _username_key(username: str) -> str:
    # Hashed: a cache key holds no user input; case-folded: "Alice" and "alice" share a budget.
    return hashlib.sha256(username.strip().casefold().encode()).hexdigest()[:32]


class LoginUsernameThrottle(SharedRateThrottle):
    """``POST /api/auth/login``: per username tried, at the login rate, whatever the client's IP
    (one account cannot be guessed at from many addresses). One budget with the login pages."""

    scope = "login"

    def identity(self, request: Request) -> str:
        username = request.data.get("username") if hasattr(request.data, "get") else None
        return f"username:{_username_key(username)}" if isinstance(username, str) and username else ""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if not self.identity(request):
            return True  # no username: the request fails validation without a credential check
        return super().allow_request(request, view)


def login_attempt_hit(request: HttpRequest | Request, username: object) -> float | None:
    """Count one password attempt of a login form against the budget of the client's IP and of
    the username (``NEXUS_THROTTLE_LOGIN``, shared with ``/api/auth/login``).

    None when the attempt may go ahead; else the seconds to wait, and the credentials must not be
    checked at all. ``request`` is a Django or DRF request (the IP comes from ``REMOTE_ADDR``, or
    ``X-Forwarded-For`` behind ``NEXUS_TRUSTED_PROXIES`` proxies, as for the API).
    """
    raw = api_settings.DEFAULT_THROTTLE_RATES.get(LoginThrottle.scope)
    if not raw:
        return None
    limit, period = parse_rate(raw)  # type: ignore[arg-type]  # a "N/period" string, as above
    scope = LoginThrottle.scope
    ip = BaseThrottle().get_ident(request)  # type: ignore[arg-type]  # reads META, which both have
    wait = hit(f"throttle:{scope}:ip:{ip}", limit=limit, period=period)
    if wait is None and isinstance(username, str) and username:
        wait = hit(f"throttle:{scope}:username:{_username_key(username)}", limit=limit, period=period)
    return wait


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value for a wait: whole seconds, at least one."""
    return max(1, math.ceil(wait))


class VerifyThrottle(SharedRateThrottle):
    """``POST /api/auth/verify``: per client IP (seed 001: 50/min), failures included."""

    scope = "verify"
    per = "ip"


class RefreshThrottle(SharedRateThrottle):
    """``POST /api/auth/refresh``: per client IP (50/min)."""

    scope = "refresh"
    per = "ip"


class ConversationCreateThrottle(SharedRateThrottle):
    """Creating conversations (the native API, the web page): per user (30/min)."""

    scope = "conversation_create"
    methods = frozenset({"POST"})


class ConversationReadThrottle(SharedRateThrottle):
    """Reading conversations (list, search, detail with history, export): per user (120/min)."""

    scope = "conversation_read"
    methods = frozenset({"GET", "HEAD"})


class AgentOpsThrottle(SharedRateThrottle):
    """Every agent operation of the native API: per user (120/min)."""

    scope = "agent_ops"


# Seed 001's own numbers belong to seed 001's own paths (SPEC sections 3 and 9), not to the
# native API or the web page: a person reloading a page or starting chats is not a seed-001 client.


class Seed001SessionCreateThrottle(ConversationCreateThrottle):
    """Seed 001 ``POST /chat/sessions/create``: per user (5/min)."""

    scope = "seed001_session_create"


class Seed001SessionReadThrottle(ConversationReadThrottle):
    """Seed 001 ``GET /chat/sessions/{id}``: per user (10/min)."""

    scope = "seed001_session_read"


class Seed001AgentOpsThrottle(AgentOpsThrottle):
    """Seed 001 ``/agents/...``: per user (20/min)."""

    scope = "seed001_agent_ops"


class ProvidersThrottle(SharedRateThrottle):
    """``GET /api/providers/``: it asks every provider over the network; per user (10/min)."""

    scope = "providers"
