"""Scoped throttles on the shared cache (Redis when REDIS_URL is set): every process shares one budget.

DRF's own ``SimpleRateThrottle`` reads a history list, appends and writes it back: two processes
(or two threads) racing lose each other's requests. Here a rate of N per period is N *slots*; a
request claims a free slot with ``cache.add`` (Redis ``SET NX`` with a TTL of one period, atomic on
every backend), so the window slides and the count is exact however many processes share the cache.
When every slot is taken the request is refused with the time until the oldest slot frees up.

Rates come from ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` (``NEXUS_THROTTLE_*`` variables), read
on every request so tests can override them.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/min"`` -> ``(10, 60)``."""
    count, _, period = rate.partition("/")
    return int(count), _PERIODS[period[0]]


class SharedRateThrottle(BaseThrottle):
    """N requests per period per identity, shared by every process using the cache."""

    scope: ClassVar[str] = ""
    per: ClassVar[str] = "user"  # "user" (the user, or the IP when anonymous) or "ip"
    methods: ClassVar[frozenset[str] | None] = None  # None: every method

    def __init__(self) -> None:
        self.wait_seconds: float | None = None

    def rate(self) -> tuple[int, int] | None:
        raw = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)
        return parse_rate(raw) if raw else None

    def identity(self, request: Any) -> str:
        user = getattr(request, "user", None)
        if self.per == "user" and user is not None and user.is_authenticated:
            return f"user:{user.pk}"
        return f"ip:{self.get_ident(request)}"

    def applies_to(self, request: Any, view: Any) -> bool:
        return self.methods is None or request.method in self.methods

    def allow_request(self, request: Any, view: Any) -> bool:
        rate = self.rate()
        if rate is None or not self.applies_to(request, view):
            return True
        limit, period = rate
        base = f"throttle:{self.scope}:{self.identity(request)}:"
        keys = [f"{base}{slot}" for slot in range(limit)]
        now = time.time()
        taken = cache.get_many(keys)
        for key in keys:
            if key not in taken and cache.add(key, now, timeout=period):
                return True
        # every slot was taken (or taken by a racer between get_many and add): refuse
        taken = cache.get_many(keys)
        if len(taken) < limit:
            # a slot expired just now; claim it rather than refuse a request that fits
            for key in keys:
                if key not in taken and cache.add(key, now, timeout=period):
                    return True
        oldest = min((float(value) for value in taken.values()), default=now)
        self.wait_seconds = max(0.0, oldest + period - now)
        return False

    def wait(self) -> float | None:
        return self.wait_seconds


class LoginThrottle(SharedRateThrottle):
    """``POST /api/auth/login``: per client IP (seed 001: 10/min)."""

    scope = "login"
    per = "ip"


class VerifyThrottle(SharedRateThrottle):
    """``POST /api/auth/verify``: per client IP (seed 001: 50/min), failures included."""

    scope = "verify"
    per = "ip"


class RefreshThrottle(SharedRateThrottle):
    """``POST /api/auth/refresh``: per client IP (50/min)."""

    scope = "refresh"
    per = "ip"


class ConversationCreateThrottle(SharedRateThrottle):
    """Creating conversations: per user (seed 001: 5/min)."""

    scope = "conversation_create"
    methods = frozenset({"POST"})


class ConversationReadThrottle(SharedRateThrottle):
    """Reading conversations (list, detail with history): per user (seed 001: 10/min)."""

    scope = "conversation_read"
    methods = frozenset({"GET", "HEAD"})


class AgentOpsThrottle(SharedRateThrottle):
    """Every agent operation: per user (seed 001: 20/min)."""

    scope = "agent_ops"
