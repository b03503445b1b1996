"""Fixtures of the REST API tests: clients authenticated the way real clients are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.test import APIClient

from agents.models import Agent
from conversations.models import Conversation, Message, Participant
from core.auth import tokens_issue


def _clear_cache() -> None:
    """Empty the default cache. On Redis only our own prefix: ``cache.clear()`` would be FLUSHDB
    on a Redis other tests (and other people's processes) share."""
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        client = backend._cache.get_client(write=True)
        for key in client.scan_iter(f"{backend.key_prefix}:*"):
            client.delete(key)
    else:
        backend.clear()


@pytest.fixture(autouse=True)
def _fresh_cache_and_generous_throttles(settings):
    """Throttle budgets live in the cache: start every test with an empty one, and with the
    throttles off (no rate). Tests of a throttle set its rate with ``throttle_rate``."""
    _clear_cache()
    # users are made per test: a fast hasher keeps the suite quick (hashing is Django's concern)
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": dict.fromkeys(settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], None),
    }
    yield
    _clear_cache()


@pytest.fixture
def throttle_rate(settings) -> Callable[[str, str], None]:
    def set_rate(scope: str, rate: str) -> None:
        rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], scope: rate}
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}

    return set_rate


def bearer_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens_issue(user)['access_token']}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()


@pytest.fixture
def alice(user) -> APIClient:
    return bearer_client(user)


@pytest.fixture
def mallory(other_user) -> APIClient:
    return bearer_client(other_user)


@pytest.fixture
def operator(staff_user) -> APIClient:
    return bearer_client(staff_user)


@pytest.fixture
def shared_agent(db) -> Agent:
    return Agent.objects.create(name="Shared helper", provider="local", model="smollm2-135m-instruct")


@pytest.fixture
def alice_agent(user) -> Agent:
    return Agent.objects.create(owner=user, name="Alice's agent", provider="local", model="smollm2")


@pytest.fixture
def mallory_agent(other_user) -> Agent:
    return Agent.objects.create(owner=other_user, name="Mallory's agent", provider="local", model="smollm2")


def make_conversation(
    owner: Any, agent: Agent, *, title: str = "", messages: tuple[str, ...] = ()
) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, title=title)
    Participant.objects.create(conversation=conversation, agent=agent, role="primary", position=0)
    for seq, content in enumerate(messages, start=1):
        if seq % 2:
            Message.objects.create(conversation=conversation, role="user", content=content, seq=seq)
        else:
            Message.objects.create(
                conversation=conversation, role="agent", agent=agent, content=content, seq=seq
            )
    if messages:
        conversation.last_seq = len(messages)
        conversation.save(update_fields=["last_seq"])
    return conversation


@pytest.fixture
def alice_conversation(user, shared_agent) -> Conversation:
    return make_conversation(
        user, shared_agent, title="Alice's chat", messages=("What is the capital of France?", "Paris.")
    )


@pytest.fixture
def mallory_conversation(other_user, shared_agent) -> Conversation:
    return make_conversation(other_user, shared_agent, title="Mallory's chat", messages=("secret plan", "ok"))


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The one error shape: JSON with detail, code and timestamp."""
    assert response.status_code == status, (response.status_code, getattr(response, "content", b"")[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["code"], str) and body["code"]
    assert "T" in body["timestamp"]
    if code is not None:
        assert body["code"] == code, body
    return body
