"""Personal API keys: made, listed, revoked by their user; checked on every request that sends one.

Format ``nx-<prefix>.<secret>``: ``prefix`` is 12 random hex characters (stored, shown, and the
index a presented key is found by), ``secret`` 43 URL-safe characters (256 bits). The row keeps the
SHA-256 of the whole key, never the key, which is returned once by ``api_key_create``. A key has
scopes: ``v1`` (the OpenAI-compatible ``/v1`` endpoints) and ``api`` (the REST API under
``/api/``); keys never manage keys (``/api/keys/`` takes a JWT or the session only).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request

from core.auth import AuthenticationFailed, User, bearer_token
from core.errors import Forbidden, NotFound, ValidationFailed, parse_uuid
from core.models import ApiKey

KEY_PREFIX = "nx-"
SCOPES = ("v1", "api")
KEY_STATUSES = ("active", "expired", "revoked")
DEFAULT_SCOPES = ["v1"]
MAX_KEYS_PER_USER = 50
MAX_LIFETIME_DAYS = 3650
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most this often


def is_api_key(token: str | None) -> bool:
    return bool(token) and str(token).startswith(KEY_PREFIX)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _scopes(value: Any) -> list[str]:
    if value is None:
        return list(DEFAULT_SCOPES)
    if not isinstance(value, list) or not value or not all(isinstance(s, str) and s in SCOPES for s in value):
        raise ValidationFailed(
            f"scopes is a non-empty list of {list(SCOPES)}.", details={"scopes": [f"Each of {list(SCOPES)}."]}
        )
    return sorted(set(value), key=SCOPES.index)


def _expiry(expires_in_days: Any) -> datetime | None:
    if expires_in_days is None:
        return None
    if (
        isinstance(expires_in_days, bool)
        or not isinstance(expires_in_days, int)
        or not 1 <= expires_in_days <= MAX_LIFETIME_DAYS
    ):
        raise ValidationFailed(
            f"expires_in_days is a whole number from 1 to {MAX_LIFETIME_DAYS}, or null (never).",
            details={"expires_in_days": [f"1..{MAX_LIFETIME_DAYS} or null."]},
        )
    return timezone.now() + timedelta(days=expires_in_days)


def api_key_create(
    *, user: User, name: Any, scopes: Any = None, expires_in_days: Any = None
) -> tuple[ApiKey, str]:
    """A new key of ``user``'s: (its row, the key itself, which is never available again)."""
    if not isinstance(name, str) or not name.strip() or len(name) > 100 or "\x00" in name:
        raise ValidationFailed(
            "name is a non-empty string of at most 100 characters.",
            details={"name": ["1 to 100 characters."]},
        )
    chosen = _scopes(scopes)
    expires_at = _expiry(expires_in_days)
    live = ApiKey.objects.filter(user=user, revoked_at__isnull=True).count()
    if live >= MAX_KEYS_PER_USER:
        raise ValidationFailed(
            f"At most {MAX_KEYS_PER_USER} live keys per user: revoke one first.",
            details={"name": ["Too many keys."]},
        )
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}.{secrets.token_urlsafe(32)}"
    row = ApiKey.objects.create(
        user=user,
        name=name.strip(),
        prefix=prefix,
        secret_hash=_digest(key),
        scopes=chosen,
        expires_at=expires_at,
    )
    return row, key


def api_key_list(*, user: User) -> list[ApiKey]:
    return list(ApiKey.objects.filter(user=user).order_by("-created_at")[:200])


def api_key_revoke(*, user: User, key_id: Any) -> ApiKey:
    """Revoke one of ``user``'s keys (another user's is NotFound). Revoking twice is not an error."""
    pk = parse_uuid(key_id, what="API key")
    row = ApiKey.objects.filter(pk=pk, user=user).first()
    if row is None:
        raise NotFound("API key not found.")
    if row.revoked_at is None:
        row.revoked_at = timezone.now()
        row.save(update_fields=["revoked_at"])
    return row


def api_key_status(row: ApiKey) -> str:
    if row.revoked_at is not None:
        return "revoked"
    if row.expires_at is not None and row.expires_at <= timezone.now():
        return "expired"
    return "active"


def api_key_describe(row: ApiKey) -> dict[str, Any]:
    """A key as lists show it: never the secret."""
    return {
        "id": str(row.pk),
        "name": row.name,
        "prefix": f"{KEY_PREFIX}{row.prefix}",
        "scopes": list(row.scopes),
        "status": api_key_status(row),
        "created_at": row.created_at.isoformat(),
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
        "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
    }


def user_from_api_key(key: str, *, scope: str) -> User:
    """The active user a presented key belongs to, if the key is live and has ``scope``.

    ``AuthenticationFailed`` (401) for a malformed, unknown, revoked or expired key or an inactive
    user; ``Forbidden`` (403) for a good key without the scope."""
    body = key[len(KEY_PREFIX) :] if is_api_key(key) else ""
    prefix, dot, secret = body.partition(".")
    if not dot or not prefix or not secret or len(key) > 200:
        raise AuthenticationFailed("Invalid API key.")
    row = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if row is None or not constant_time_compare(row.secret_hash, _digest(key)):
        raise AuthenticationFailed("Invalid API key.")
    status = api_key_status(row)
    if status != "active":
        raise AuthenticationFailed(f"This API key is {status}.")
    user = row.user
    if not user.is_active:
        raise AuthenticationFailed("User is inactive.")
    if scope not in row.scopes:
        raise Forbidden(f"This API key does not have the {scope!r} scope.")
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=row.pk).update(last_used_at=now)
    assert isinstance(user, get_user_model())
    return user


def api_key_prefix(key: str) -> str:
    return key[len(KEY_PREFIX) :].partition(".")[0]


def api_key_recheck(prefix: str) -> tuple[str, str] | None:
    """For an open stream opened with a key: None while the key is live, else ``("revoked",
    message)`` (revoked, expired or gone), as ``core.auth.connection_recheck`` answers."""
    row = ApiKey.objects.filter(prefix=prefix).first()
    if row is None or api_key_status(row) != "active":
        return "revoked", "The API key was revoked or expired."
    return None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """DRF: ``Authorization: Bearer nx-...`` with the ``api`` scope. First in the list: a bearer
    value that is not a key is left to the JWT class."""

    def authenticate(self, request: Request) -> tuple[User, ApiKey | str] | None:
        raw = bearer_token(authentication.get_authorization_header(request))
        if raw is None or not is_api_key(raw):
            return None
        try:
            user = user_from_api_key(raw, scope="api")
        except AuthenticationFailed as exc:
            raise drf_exceptions.AuthenticationFailed(exc.message) from None
        except Forbidden as exc:
            raise drf_exceptions.PermissionDenied(exc.message) from None
        return user, "api_key"

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "core.apikeys.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API key (nx-...) with the 'api' scope, from POST /api/keys/.",
        }
