"""Secrets stored in the database, encrypted: Fernet (AES-128-CBC + HMAC-SHA256, ``cryptography``)
with a key derived from the application's secret key.

The Fernet key is HKDF-SHA256 over the secret key (``SECRET_KEY``), with no salt and the info
``b"nexus:" + purpose``: one key per purpose, none of them the secret key itself. Decryption tries
the current secret key, then each of ``SECRET_KEY_FALLBACKS`` (Django's rotation setting), so a
rotated key keeps old values readable until they are written again. A value no key opens (the
secret key changed with no fallback) raises :class:`SecretUnreadable`: enter it again.

This module reads no settings: its callers pass the keys.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class SecretUnreadable(Exception):
    """A stored secret that none of the keys opens."""


def fernet_key(secret_key: str, purpose: str) -> bytes:
    """The Fernet key (url-safe base64 of 32 bytes) for ``purpose`` under ``secret_key``."""
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"nexus:" + purpose.encode()).derive(
        secret_key.encode()
    )
    return base64.urlsafe_b64encode(derived)


def _box(secret_keys: Sequence[str], purpose: str) -> MultiFernet:
    if not secret_keys:
        raise ValueError("no secret key")
    return MultiFernet([Fernet(fernet_key(key, purpose)) for key in secret_keys])


def encrypt_text(text: str, *, secret_keys: Sequence[str], purpose: str) -> str:
    """``text`` encrypted under the first of ``secret_keys`` (the current one)."""
    return _box(secret_keys, purpose).encrypt(text.encode()).decode("ascii")


def decrypt_text(token: str, *, secret_keys: Sequence[str], purpose: str) -> str:
    """The text of ``token``, opened by any of ``secret_keys``; SecretUnreadable if none does."""
    try:
        return _box(secret_keys, purpose).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError):
        raise SecretUnreadable("the stored secret cannot be decrypted with the current keys") from None
