"""Fixtures of the security tests: the in-process realtime fixtures (the real ASGI application, the
scripted provider registered through the registry's own door, a frame-reading client)."""

from __future__ import annotations

import pytest

from tests.realtime.conftest import _engine_cleanup, application, connect, scripted_provider

__all__ = ["_engine_cleanup", "application", "connect", "scripted_provider"]


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Users are made per test: a fast hasher keeps these quick (hashing is Django's concern)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
