"""Authentication: JWT access/refresh tokens (simplejwt, hardened) and single-use WebSocket tickets.

One code path for every surface: the REST API (:class:`JWTAuthentication`), the WebSocket auth
middleware (:func:`user_from_access_token`, :func:`ws_ticket_redeem`) and the auth endpoints
(:func:`tokens_issue`, :func:`tokens_refresh`) all call the functions here. They are plain sync
functions; async callers wrap them in ``database_sync_to_async``.

What a token must be to pass: signed HS256 with ``NEXUS_JWT_SIGNING_KEY`` (``alg: none`` and every
other algorithm are refused by PyJWT), ``aud``/``iss`` equal to ``NEXUS_JWT_AUDIENCE`` /
``NEXUS_JWT_ISSUER``, not expired, of the right type (a refresh token is never an access token),
for an existing *active* user whose password has not changed since (the ``hash_password`` claim).
The user is read from the database on every request, so deactivating a user locks them out at once.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from importlib import import_module
from typing import Any, TypeAlias

from django.conf import settings
from django.contrib import auth as django_auth
from django.contrib.auth import get_user_model
from django.contrib.auth import models as auth_models
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request
from rest_framework_simplejwt.exceptions import ExpiredTokenError, TokenError
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken, Token
from rest_framework_simplejwt.utils import datetime_from_epoch, get_md5_hash_password

from core.errors import NexusError, ValidationFailed

logger = logging.getLogger("nexus.auth")

TICKET_CACHE_PREFIX = "ws-ticket:"

# The type of a signed-in user wherever code takes one: Django's user model (AUTH_USER_MODEL is
# not swapped). Instances come from get_user_model(); annotate with this.
User: TypeAlias = auth_models.User


class AuthenticationFailed(NexusError):
    """Credentials are missing, invalid, expired or belong to a user who may not log in."""

    code = "authentication_failed"
    http_status = 401


# --- tokens ----------------------------------------------------------------------------------


def _active_user(user_id: object) -> User:
    User = get_user_model()
    if user_id is None:
        raise AuthenticationFailed("Token names no user.")
    try:
        user = User.objects.get(**{jwt_settings.USER_ID_FIELD: user_id})
    except (User.DoesNotExist, ValueError, TypeError):
        raise AuthenticationFailed("User not found.") from None
    if not user.is_active:
        raise AuthenticationFailed("User is inactive.")
    return user


def _check_not_revoked(token: Token, user: User) -> None:
    if jwt_settings.CHECK_REVOKE_TOKEN and token.get(
        jwt_settings.REVOKE_TOKEN_CLAIM
    ) != get_md5_hash_password(user.password):
        raise AuthenticationFailed("Token has been revoked.")


def access_token_decode(token: str) -> AccessToken:
    """Verify an access token's signature, algorithm, audience, issuer, expiry and type."""
    if not isinstance(token, str) or not token.strip():
        raise AuthenticationFailed("No token.")
    try:
        return AccessToken(token.strip())  # type: ignore[arg-type]  # simplejwt annotates Token; it takes the str
    except TokenError as exc:
        raise AuthenticationFailed(f"Invalid token: {exc}") from None


def user_from_access_token(token: str) -> User:
    """The active user an access token belongs to; ``AuthenticationFailed`` for every bad case.

    Expired, bad signature, ``alg: none``, wrong audience or issuer, a refresh token, an unknown or
    inactive user, or a password changed since the token was issued.
    """
    access = access_token_decode(token)
    user = _active_user(access.get(jwt_settings.USER_ID_CLAIM))
    _check_not_revoked(access, user)
    return user


def access_token_claims(token: str) -> tuple[float | None, str | None]:
    """(expiry as epoch seconds, password-hash claim) of a verified access token: what an open
    connection needs to re-check it later without keeping the token itself."""
    access = access_token_decode(token)
    expires = access.get("exp")
    claim = access.get(jwt_settings.REVOKE_TOKEN_CLAIM) if jwt_settings.CHECK_REVOKE_TOKEN else None
    return (float(expires) if expires else None), claim


def password_hash_claim(user: User) -> str:
    """The value a token's ``hash_password`` claim has while ``user``'s password is unchanged."""
    return get_md5_hash_password(user.password)


def tokens_issue(user: User) -> dict[str, Any]:
    """A fresh refresh/access pair for ``user``, in the seed-001 shape."""
    refresh = RefreshToken.for_user(user)
    return _token_body(refresh)


def _token_body(refresh: RefreshToken) -> dict[str, Any]:
    return {
        "access_token": str(refresh.access_token),
        "refresh_token": str(refresh),
        "token_type": "bearer",
        "expires_in": int(jwt_settings.ACCESS_TOKEN_LIFETIME.total_seconds()),
    }


@transaction.atomic
def tokens_refresh(raw_refresh: str) -> dict[str, Any]:
    """Rotate a refresh token: the old one is blacklisted (exactly once, even under a race) and a
    new pair is returned. A used, expired or foreign token, or an inactive user: AuthenticationFailed."""
    try:
        refresh = RefreshToken(raw_refresh)  # type: ignore[arg-type]  # simplejwt annotates Token; it takes the str
    except TokenError as exc:
        raise AuthenticationFailed(f"Invalid refresh token: {exc}") from None
    user = _active_user(refresh.get(jwt_settings.USER_ID_CLAIM))
    _check_not_revoked(refresh, user)
    outstanding, _ = OutstandingToken.objects.get_or_create(
        jti=refresh[jwt_settings.JTI_CLAIM],
        defaults={
            "user": user,
            "token": str(raw_refresh),
            "created_at": timezone.now(),
            "expires_at": datetime_from_epoch(refresh["exp"]),
        },
    )
    # The unique blacklist row is the lock: of two concurrent refreshes with one token, one wins.
    _, created = BlacklistedToken.objects.get_or_create(token=outstanding)
    if not created:
        raise AuthenticationFailed("Invalid refresh token: Token is blacklisted")
    return tokens_issue(user)


@transaction.atomic
def refresh_token_revoke(*, user: User, raw_refresh: str) -> bool:
    """Blacklist ``user``'s refresh token (logout): it is refused from now on, by every process.

    True when it was live until now; False when there was nothing left to revoke (already
    blacklisted, or expired). Not a refresh token, a bad signature, or another user's token:
    ``ValidationFailed``, and nothing changes.
    """
    try:
        refresh = RefreshToken(raw_refresh)  # type: ignore[arg-type]  # simplejwt annotates Token; it takes the str
    except ExpiredTokenError:
        return False
    except TokenError as exc:
        if "blacklisted" in str(exc).lower():
            return False
        raise ValidationFailed(
            "refresh_token is not a valid refresh token.", details={"refresh_token": [str(exc)]}
        ) from None
    if str(refresh.get(jwt_settings.USER_ID_CLAIM)) != str(getattr(user, jwt_settings.USER_ID_FIELD)):
        raise ValidationFailed(
            "refresh_token belongs to another user.", details={"refresh_token": ["Not yours."]}
        )
    # simplejwt annotates blacklist() as the row; it returns get_or_create's (row, created)
    created: bool
    _, created = refresh.blacklist()  # type: ignore[misc]
    return created


def connection_recheck(
    *,
    user_id: int,
    password_hash: str | None = None,
    expires_at: float | None = None,
    session_key: str | None = None,
) -> tuple[str, str] | None:
    """Do the credentials an open connection (socket, SSE stream) was opened with still hold?

    None while they do. Else ``("expired", message)`` once the token's time is up, or
    ``("revoked", message)`` once the user is gone or inactive, the password changed since (the
    token's ``hash_password`` claim, or the hash taken when a ticket was redeemed), or the cookie
    session ended (logout, expiry, or the session's own password check, as Django's).
    """
    if expires_at is not None and time.time() >= expires_at:
        return "expired", "The token expired; reconnect with a fresh one."
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None or not user.is_active:
        return "revoked", "The account is no longer active."
    if password_hash is not None and password_hash != password_hash_claim(user):
        return "revoked", "The password changed; sign in again."
    if session_key is not None and not _session_signed_in_as(session_key, user):
        return "revoked", "Signed out."
    return None


def _session_signed_in_as(session_key: str, user: User) -> bool:
    """Is the session ``session_key`` still signed in as ``user``? Django's own test (user,
    backend, the session's password-derived hash, secret key fallbacks included), read only: unlike
    ``django.contrib.auth.get_user`` it never flushes or re-keys a session, which only an HTTP
    response could hand back to the browser."""
    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key).load()
    try:
        session_user_id = user._meta.pk.to_python(data[django_auth.SESSION_KEY])
        backend = data[django_auth.BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return False
    session_hash = data.get(django_auth.HASH_SESSION_KEY)
    if session_user_id != user.pk or backend not in settings.AUTHENTICATION_BACKENDS or not session_hash:
        return False
    hashes = [user.get_session_auth_hash()] + [
        user._get_session_auth_hash(secret=key)  # type: ignore[attr-defined]  # Django's, not in the stubs
        for key in settings.SECRET_KEY_FALLBACKS
    ]
    return any(constant_time_compare(session_hash, candidate) for candidate in hashes)


def token_verify(token: str) -> dict[str, Any]:
    """``POST /api/auth/verify``: who an access token belongs to, and its times (seed 001)."""
    access = access_token_decode(token)
    user = _active_user(access.get(jwt_settings.USER_ID_CLAIM))
    _check_not_revoked(access, user)
    return {
        "valid": True,
        "user": user.get_username(),
        "type": "access",
        "exp": int(access["exp"]),
        "iat": int(access["iat"]),
        "timestamp": timezone.now().isoformat(),
    }


def bearer_token(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when there is no bearer
    header. Never raises: a malformed value comes back as is and fails verification."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in {t.lower() for t in jwt_settings.AUTH_HEADER_TYPES}:
        return None
    # "Bearer" with no token, or with spaces in it, is returned as is: it fails verification (401)
    # rather than being taken for "no credentials".
    return value.strip() or " "


class JWTAuthentication(authentication.BaseAuthentication):
    """DRF authentication through :func:`user_from_access_token` (the same rules as WebSocket)."""

    www_authenticate_realm = "api"

    def authenticate(self, request: Request) -> tuple[User, str] | None:
        try:
            raw = bearer_token(authentication.get_authorization_header(request))
            if raw is None:
                return None
            user = user_from_access_token(raw)
        except AuthenticationFailed as exc:
            raise drf_exceptions.AuthenticationFailed(exc.message) from None
        return user, raw

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


class JWTAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.auth.JWTAuthentication"
    name = "jwtAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from POST /api/auth/login.",
        }


# --- WebSocket tickets -----------------------------------------------------------------------


def _ticket_key(ticket: str) -> str:
    # Only a hash of the ticket is stored: the cache never holds a usable credential.
    return TICKET_CACHE_PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


def ws_ticket_issue(user: AbstractBaseUser) -> str:
    """A single-use ticket for ``?ticket=`` on a WebSocket URL, valid ``NEXUS_WS_TICKET_SECONDS``.

    Stored in the Django cache (Redis when REDIS_URL is set), so any process can redeem it.
    """
    ticket = secrets.token_urlsafe(32)
    cache.set(_ticket_key(ticket), user.pk, timeout=settings.NEXUS_WS_TICKET_SECONDS)
    return ticket


def ws_ticket_redeem(ticket: str) -> User | None:
    """The active user a ticket was issued to, or None (unknown, expired or already used).

    Single use across every process: the cache's delete is atomic and reports whether the key
    existed, so of two concurrent redeemers exactly one wins.
    """
    if not isinstance(ticket, str) or not ticket or len(ticket) > 200:
        return None
    key = _ticket_key(ticket)
    user_id = cache.get(key)
    if user_id is None or not cache.delete(key):
        return None
    User = get_user_model()
    try:
        user = User.objects.get(pk=user_id)
    except User.DoesNotExist:
        return None
    return user if user.is_active else None


# --- single-user mode ------------------------------------------------------------------------


def single_user_origin_permitted(origin: str | None, host: str | None) -> bool:
    """May a request with this ``Origin`` act as the single user? With none (curl, a server, a
    same-origin GET), yes; a browser page elsewhere only when its origin is allowed or is this
    very host: another site open in the same browser cannot drive the local user's agents."""
    if not origin:
        return True
    if origin in settings.NEXUS_ALLOWED_ORIGINS:
        return True
    return bool(host) and origin.partition("://")[2] == host


def single_user_get() -> User | None:
    """The one local user of single-user mode (``NEXUS_SINGLE_USER``, made on first use, with no
    usable password); None when the mode is off or that account was deactivated."""
    if not settings.NEXUS_AUTH_OFF:
        return None
    user, created = get_user_model().objects.get_or_create(username=settings.NEXUS_SINGLE_USER)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
        logger.warning("single-user mode: created the local user %r", user.get_username())
    return user if user.is_active else None


def single_user_for(*, origin: str | None, host: str | None) -> User | None:
    """The single user for a request or socket that sent no credentials, or None (mode off, or an
    origin that may not act as it)."""
    if not settings.NEXUS_AUTH_OFF or not single_user_origin_permitted(origin, host):
        return None
    return single_user_get()


def single_user_mode_announce() -> None:
    """Log, loudly, that authentication is off (once per process, at start)."""
    if settings.NEXUS_AUTH_OFF:
        logger.warning(
            "AUTHENTICATION IS OFF (NEXUS_AUTH=off): every request without credentials acts as %r. "
            "The admin still requires a login. Never expose this server to a network.",
            settings.NEXUS_SINGLE_USER,
        )


class SingleUserAuthentication(authentication.BaseAuthentication):
    """DRF: with ``NEXUS_AUTH=off``, a request that sent no ``Authorization`` header and has no
    session is the single user. Last in the list: a token or a session always wins, and a bad
    token is still a 401 (the JWT class raises before this one is asked)."""

    def authenticate(self, request: Request) -> tuple[User, None] | None:
        if not settings.NEXUS_AUTH_OFF or authentication.get_authorization_header(request):
            return None
        user = single_user_for(origin=request.headers.get("Origin"), host=request.headers.get("Host"))
        return (user, None) if user is not None else None


class SingleUserAuthenticationScheme(OpenApiAuthenticationExtension):
    """In the schema: with the mode on, every endpoint also accepts no credentials at all."""

    target_class = "core.auth.SingleUserAuthentication"
    name: list[str] = []  # no security scheme of its own: only the anonymous requirement

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        return []

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[Any]] | list[dict[str, list[Any]]]:
        return {} if settings.NEXUS_AUTH_OFF else []
