"""Quotas of the REST API (SPEC section 12): `/api/providers/` is throttled; an agent's provider
timeouts are capped by the operator's maximum (refused on save, clamped at run time)."""

from __future__ import annotations

import pytest

from agents.models import Agent
from agents.provider_config import generation_options_for
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

AGENTS = "/api/agents/"
NEW = {"name": "Poet", "provider": "local", "model": "smollm2-135m-instruct"}


def test_providers_are_throttled_per_user_with_retry_after(alice, mallory, throttle_rate, settings):
    settings.NEXUS_PROVIDER_STATUS_TIMEOUT = 0.2
    settings.OLLAMA_BASE_URL = "http://127.0.0.1:9"  # nothing listens: unreachable at once
    throttle_rate("providers", "1/min")
    assert alice.get("/api/providers/").status_code == 200
    response = alice.get("/api/providers/")
    body = assert_error(response, 429, "rate_limited")
    assert 1 <= body["retry_after"] <= 60
    assert response["Retry-After"] == str(body["retry_after"])
    assert mallory.get("/api/providers/").status_code == 200  # per user


def test_an_agent_timeout_above_the_operator_maximum_is_refused(alice, settings):
    settings.NEXUS_MAX_AGENT_TIMEOUT_SECONDS = 30
    response = alice.post(AGENTS, {**NEW, "config": {"timeouts": {"total": 31}}}, format="json")
    body = assert_error(response, 400, "validation_error")
    assert "30" in body["detail"]
    accepted = alice.post(AGENTS, {**NEW, "config": {"timeouts": {"total": 30}}}, format="json")
    assert accepted.status_code == 201, accepted.content


def test_a_timeout_saved_before_the_maximum_was_lowered_is_clamped_at_run_time(user, settings):
    agent = Agent.objects.create(
        owner=user, name="Old", provider="local", model="m", config={"timeouts": {"total": 900, "connect": 2}}
    )
    settings.NEXUS_MAX_AGENT_TIMEOUT_SECONDS = 60
    timeouts = generation_options_for(agent).timeouts
    assert timeouts.total == 60
    assert timeouts.connect == 2
