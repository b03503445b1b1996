"""Long-lived connections after the handshake: credential re-checks, the connection cap for SSE
streams, and their maximum age (SPEC section 12).

A socket or SSE stream is authenticated once, when it opens, and may stay open for hours. So
every ``NEXUS_AUTH_RECHECK_SECONDS`` (at most 60) it re-checks what it was opened with, and ends
once the user is deactivated or deleted, the password changed, the cookie session ended (logout),
or the token expired: close 4003 (4002 for an expired token) on a socket, a final ``error`` event
on a stream. SSE streams also take a place in the per-user cap the sockets use
(``NEXUS_WS_MAX_SOCKETS_PER_USER``, one count for both) and end at ``NEXUS_SSE_MAX_AGE_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib import auth as django_auth
from django.http import HttpRequest

from core.apikeys import api_key_prefix, api_key_recheck, is_api_key
from core.auth import AuthenticationFailed, User, access_token_claims, bearer_token, connection_recheck
from core.errors import RateLimited
from core.tasks import process_task
from realtime import protocol
from realtime.limits import get_limits

logger = logging.getLogger(__name__)

CLOSE_EXPIRED = 4002
CLOSE_AUTH = 4003


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What a connection was authenticated with, kept to re-check it (never the token itself)."""

    user_id: int
    password_hash: str | None = None
    expires_at: float | None = None
    session_key: str | None = None
    api_key: str | None = None  # the prefix of a personal API key (``/v1``), re-checked too

    @classmethod
    def from_socket_auth(cls, auth: dict[str, Any], user: User) -> Credentials:
        """From the ``scope["auth"]`` the WebSocket auth middleware made."""
        return cls(
            user_id=user.pk,
            password_hash=auth.get("password_hash"),
            expires_at=auth.get("expires_at"),
            session_key=auth.get("session_key") if auth.get("method") == "cookie" else None,
        )

    @classmethod
    def from_request(cls, request: HttpRequest, user: User) -> Credentials:
        """From an HTTP request authenticated by a JWT bearer or, failing that, the session."""
        token = bearer_token(request.headers.get("Authorization"))
        if token and is_api_key(token):
            return cls(user_id=user.pk, api_key=api_key_prefix(token))
        if token:
            try:
                expires_at, password_hash = access_token_claims(token)
            except AuthenticationFailed:  # expired since the view checked it: the first check ends it
                expires_at, password_hash = time.time(), None
            return cls(user_id=user.pk, expires_at=expires_at, password_hash=password_hash)
        return cls(user_id=user.pk, session_key=_session_key_signed_in_as(request, user))

    def seconds_to_next_check(self) -> float:
        """Until the next re-check: the interval (spread a little, so that a thousand sockets
        opened together do not ask the database together), or the token's expiry if sooner."""
        wait = settings.NEXUS_AUTH_RECHECK_SECONDS * random.uniform(0.8, 1.0)
        if self.expires_at is not None:
            wait = min(wait, self.expires_at - time.time())
        return max(0.01, wait)

    async def recheck(self) -> tuple[int, str] | None:
        """None while the credentials hold; else (close code, message): 4002 when the token
        expired, 4003 when the user or the session is gone (``core.auth.connection_recheck``)."""
        verdict = await database_sync_to_async(connection_recheck)(
            user_id=self.user_id,
            password_hash=self.password_hash,
            expires_at=self.expires_at,
            session_key=self.session_key,
        )
        if verdict is None and self.api_key is not None:
            verdict = await database_sync_to_async(api_key_recheck)(self.api_key)
        if verdict is None:
            return None
        kind, message = verdict
        return (CLOSE_EXPIRED if kind == "expired" else CLOSE_AUTH), message


# --- SSE streams ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Place:
    """A stream's entry in its user's connection cap."""

    user_id: int
    stream_id: str
    released: bool = False

    async def release(self) -> None:
        if not self.released:
            self.released = True
            with contextlib.suppress(Exception):
                await get_limits().socket_close(self.user_id, self.stream_id)


def _release_soon(place: _Place, loop: asyncio.AbstractEventLoop) -> None:
    """A guard was dropped with its place still held: its stream never ran to its end (the view
    failed after opening it, or the client left before the first byte). Free it on its loop."""
    if not place.released and not loop.is_closed():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(lambda: _spawn(place.release()))


def _session_key_signed_in_as(request: HttpRequest, user: User) -> str | None:
    """The request's session key when that session is what signed ``user`` in; None otherwise (the
    single user of NEXUS_AUTH=off, whose stale cookie must not end the stream as "signed out").
    The caller authenticated with ``request.auser()``, so the session is loaded: no query here."""
    session = getattr(request, "session", None)
    if session is None or session.session_key is None:
        return None
    signed_in = str(session.get(django_auth.SESSION_KEY, "")) == str(user.pk)
    return session.session_key if signed_in else None


class StreamGuard:
    """One SSE stream's place in its user's connection cap, its re-checks and its maximum age.

    ``await StreamGuard.open(request, user)`` before the response starts (over the cap: 429
    ``rate_limited``); then ``guard.wrap(body)`` is the response body. The place is given back when
    the body ends, however it ends, or when the guard is dropped unused.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.place = _Place(credentials.user_id, f"sse-{uuid.uuid4().hex}")

    @classmethod
    async def open(cls, request: HttpRequest, user: User) -> StreamGuard:
        guard = cls(Credentials.from_request(request, user))
        if not await get_limits().socket_open(user.pk, guard.place.stream_id):
            guard.place.released = True
            raise RateLimited(
                f"At most {settings.NEXUS_WS_MAX_SOCKETS_PER_USER} open sockets and streams per user.",
                retry_after=float(settings.NEXUS_AUTH_RECHECK_SECONDS),
            )
        weakref.finalize(guard, _release_soon, guard.place, asyncio.get_running_loop())
        return guard

    def wrap(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body``, until it ends, the credentials fail, or the stream reaches its max age."""
        return self._guarded(body)

    async def _guarded(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        ends_at = time.monotonic() + settings.NEXUS_SSE_MAX_AGE_SECONDS
        limits = get_limits()
        pending: asyncio.Task[bytes] | None = None
        try:
            next_check = time.monotonic() + self.credentials.seconds_to_next_check()
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(body))
                now = time.monotonic()
                if now >= ends_at:
                    yield _end_event("Stream max age reached; reconnect and resume.", CLOSE_EXPIRED)
                    return
                if now >= next_check:
                    try:
                        verdict = await self.credentials.recheck()
                    except Exception:  # the database is away: keep the stream, ask again later
                        logger.warning("credential re-check failed", exc_info=True)
                        verdict = None
                    if verdict is not None:
                        close_code, message = verdict
                        yield _end_event(message, close_code)
                        return
                    with contextlib.suppress(Exception):
                        await limits.socket_refresh(self.place.user_id, self.place.stream_id)
                    next_check = time.monotonic() + self.credentials.seconds_to_next_check()
                timeout = max(0.0, min(next_check, ends_at) - time.monotonic())
                done, _ = await asyncio.wait({pending}, timeout=timeout)
                if not done:
                    continue  # time for a re-check, or the max age
                step, pending = pending, None
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            if pending is not None and not pending.done():
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(Exception):
                await body.aclose()  # type: ignore[attr-defined]
            await self.place.release()


_background: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    task = process_task(coro, name="sse-release")
    _background.add(task)  # held until done: the loop keeps only weak references to tasks
    task.add_done_callback(_background.discard)


def _end_event(message: str, close_code: int) -> bytes:
    """The last event of a stream that the server ends: an ``error`` frame with the code a socket
    would have been closed with (4002: reconnect and resume; 4003: sign in again)."""
    frame = protocol.error_frame("forbidden", message, details={"close_code": close_code})
    return protocol.sse_event(frame, event_name="error")
