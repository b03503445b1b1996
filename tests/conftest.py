"""Fixtures shared by the whole suite.

Services: tests that need PostgreSQL or Redis take the ``postgres_url`` / ``redis_url`` fixtures.
Locally a missing service skips them; in CI (``CI=true``) it fails them: they are mandatory there.
"""

from __future__ import annotations

import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

from tests import netguard

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REDIS_URL = os.environ.get("NEXUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("NEXUS_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def pytest_configure(config):
    """The network guard (tests/netguard.py) is on for the whole run, session fixtures included."""
    netguard.install()


def pytest_unconfigure(config):
    netguard.uninstall()


@pytest.fixture(autouse=True)
def _no_network_past_loopback():
    """Fail the test that reached past loopback, even when the code under test swallowed the
    guard's exception (a retry loop, a broad ``except``)."""
    netguard.take_violations()  # a leftover of a fixture between tests is not this test's
    yield
    violations = netguard.take_violations()
    if violations:
        pytest.fail("\n".join(violations), pytrace=False)


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _require(name: str, url: str, default_port: int) -> str:
    if _answers(url, default_port):
        return url
    message = f"{name} is not answering at {url}"
    if IN_CI:
        pytest.fail(f"{message}; it is mandatory in CI")
    pytest.skip(message)


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    """The machine's Redis (mandatory in CI)."""
    return _require("Redis", REDIS_URL, 6379)


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The machine's Redis, for one test: callers use ``redis_prefix`` to keep keys apart."""
    return redis_server_url


@pytest.fixture
def redis_prefix() -> str:
    return f"nexus-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The machine's PostgreSQL (mandatory in CI)."""
    return _require("PostgreSQL", POSTGRES_URL, 5432)


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user(username="alice", password="alice-password-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user(username="mallory", password="mallory-password-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user(
        username="operator", password="operator-password-123", is_staff=True, is_superuser=True
    )


@pytest.fixture(autouse=True)
def _database_thread_connections_closed():
    """After each test, close the connections of asgiref's database thread (where
    ``database_sync_to_async`` runs): an async test that read the database there would otherwise
    keep a persistent connection open, and PostgreSQL then refuses to drop the test database."""
    yield
    import concurrent.futures

    from asgiref.sync import SyncToAsync
    from django.db import connections

    try:
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=10)
    except concurrent.futures.TimeoutError:
        pass  # the thread is still busy with a test's leftover call: nothing to close safely


# The suite's fake provider servers listen on the loopback interface, which the egress policy
# refuses by default: every test may reach them, as a deployment would list its own internal
# hosts. Tests of the policy itself set NEXUS_EGRESS_ALLOW back (tests/core/test_egress.py).
LOOPBACK_EGRESS = ["127.0.0.1", "::1"]


@pytest.fixture(autouse=True)
def _loopback_egress_allowed(settings):
    settings.NEXUS_EGRESS_ALLOW = LOOPBACK_EGRESS


# A closed loopback port: nothing listens on the discard port, so a connection is refused at once.
CLOSED_LOOPBACK_URL = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _cloud_providers_on_loopback(settings):
    """The cloud providers' default hosts (api.openai.com, generativelanguage.googleapis.com) are
    never asked: a provider status check (/health, /api/providers/) or a run on a default URL goes
    to a closed loopback port instead. Tests of the defaults set these back (to "")."""
    settings.OPENAI_BASE_URL = f"{CLOSED_LOOPBACK_URL}/v1"
    settings.GEMINI_BASE_URL = CLOSED_LOOPBACK_URL
