"""WebSocket authentication, checked before anything else happens (SPEC section 4).

Accepted, in this order: ``Authorization: Bearer <jwt>``; the subprotocol pair
``["nexus", "bearer.<jwt>"]``; ``?ticket=`` (single use); ``?token=`` (when allowed by setting);
the Django session cookie, only with an allowed ``Origin``; with ``NEXUS_AUTH=off``, none of these:
the single local user (core.auth, single-user mode). A browser ``Origin`` must be in the
allow-list (``NEXUS_ALLOWED_ORIGINS``, the one HTTP CORS uses too). The outcome is put in a copy
of the scope (``scope["auth"]``); the consumer accepts and then closes with 4003 on failure, so
browsers see the code. Tokens never reach a log.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.sessions import CookieMiddleware, SessionMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from core.auth import (
    AuthenticationFailed,
    User,
    access_token_claims,
    password_hash_claim,
    single_user_for,
    user_from_access_token,
    ws_ticket_redeem,
)

SUBPROTOCOL = "nexus"
BEARER_PREFIX = "bearer."


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _from_token(token: str) -> tuple[User, float | None, str | None]:
    """(user, expiry, password-hash claim): the socket re-checks the last two while it is open."""
    user = user_from_access_token(token)
    expires_at, password_hash = access_token_claims(token)
    return user, expires_at, password_hash


def _from_ticket(ticket: str) -> tuple[User | None, str | None]:
    """(user, the hash a password change would alter) for a ticket, or (None, None)."""
    user = ws_ticket_redeem(ticket)
    return user, (password_hash_claim(user) if user is not None else None)


async def _single_user(scope: dict[str, Any], origin: str | None) -> dict[str, Any] | None:
    """Single-user mode (NEXUS_AUTH=off): a socket that brought no credentials is the local user."""
    if not settings.NEXUS_AUTH_OFF:
        return None
    user = await database_sync_to_async(single_user_for)(origin=origin, host=_header(scope, b"host"))
    if user is None:
        return None
    return {"user": user, "method": "single_user", "error": None, "expires_at": None}


async def authenticate(scope: dict[str, Any]) -> dict[str, Any]:
    """Decide who is connecting. Returns the ``auth`` dict: user, method, error, expires_at."""
    origin = _header(scope, b"origin")
    if origin is not None and origin not in settings.NEXUS_ALLOWED_ORIGINS:
        return {"user": AnonymousUser(), "method": None, "error": "This origin is not allowed."}
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    subprotocols = scope.get("subprotocols") or []
    token, method = None, None
    authorization = _header(scope, b"authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return {
                "user": AnonymousUser(),
                "method": "header",
                "error": "Use 'Authorization: Bearer <token>'.",
            }
        token, method = value.strip(), "header"
    elif any(p.startswith(BEARER_PREFIX) for p in subprotocols):
        token = next(p for p in subprotocols if p.startswith(BEARER_PREFIX))[len(BEARER_PREFIX) :]
        method = "subprotocol"
    elif query.get("ticket"):
        user, password_hash = await database_sync_to_async(_from_ticket)(query["ticket"][0])
        if user is None:
            return {
                "user": AnonymousUser(),
                "method": "ticket",
                "error": "The ticket is invalid, used or expired.",
            }
        return {
            "user": user,
            "method": "ticket",
            "error": None,
            "expires_at": None,
            "password_hash": password_hash,
        }
    elif query.get("token"):
        if not settings.NEXUS_WS_ALLOW_QUERY_TOKEN:
            return {"user": AnonymousUser(), "method": "query", "error": "Tokens in the URL are disabled."}
        token, method = query["token"][0], "query"
    if token is not None:
        try:
            user, expires_at, password_hash = await database_sync_to_async(_from_token)(token)
        except AuthenticationFailed as exc:
            return {"user": AnonymousUser(), "method": method, "error": exc.message}
        return {
            "user": user,
            "method": method,
            "error": None,
            "expires_at": expires_at,
            "password_hash": password_hash,
        }
    if origin is None:
        return await _single_user(scope, origin) or {
            "user": AnonymousUser(),
            "method": None,
            "error": "No credentials: send a token or a ticket.",
        }
    session_user = await get_user(scope)  # type: ignore[arg-type]  # our copy of the scope is a plain dict
    if session_user is None or not session_user.is_authenticated or not session_user.is_active:
        return await _single_user(scope, origin) or {
            "user": AnonymousUser(),
            "method": "cookie",
            "error": "Not logged in.",
        }
    # The session is re-read while the socket is open: logging out (or its expiry) closes it.
    session_key = getattr(scope.get("session"), "session_key", None)
    return {
        "user": session_user,
        "method": "cookie",
        "error": None,
        "expires_at": None,
        "session_key": session_key,
    }


class NexusAuthMiddleware:
    """Puts ``auth`` and ``user`` in a copy of the scope (never keeps state on itself)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        scope = dict(scope)
        auth = await authenticate(scope)
        auth["connected_at"] = time.monotonic()
        scope["auth"] = auth
        scope["user"] = auth["user"]
        return await self.inner(scope, receive, send)


def NexusAuthStack(inner: Any) -> Any:
    return CookieMiddleware(SessionMiddleware(NexusAuthMiddleware(inner)))
