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


@pytest.fixture(autouse=True)
def _run_quotas_lifted(settings):
    """These tests send many messages as one user (a state machine, a fuzz); the run quotas have
    tests of their own (tests/runs/test_quotas.py)."""
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 100_000
    settings.NEXUS_MAX_ACTIVE_RUNS_PER_USER = 1_000
