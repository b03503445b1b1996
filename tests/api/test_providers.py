"""`GET /api/providers/` and the settings -> providers glue (agents/provider_config.py)."""

from __future__ import annotations

import asyncio
import time

import pytest

from agents import provider_config
from agents.models import Agent
from providers.base import ProviderError
from providers.registry import registry
from tests.api.conftest import assert_error
from tests.api.providers_for_tests import Cut, Failing, Hanging, Titler
from tests.fakes import FakeOllama

pytestmark = pytest.mark.django_db

URL = "/api/providers/"


def test_every_registered_provider_is_listed_with_reachability_and_models(alice, settings):
    settings.NEXUS_PROVIDER_STATUS_TIMEOUT = 1.0
    with FakeOllama() as ollama, registry.override("titler", Titler()):
        settings.OLLAMA_BASE_URL = ollama.base_url
        response = alice.get(URL)
    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()}
    assert {"local", "ollama", "openai", "gemini", "titler"} <= set(rows)
    assert rows["titler"]["reachable"] is True
    assert rows["titler"]["models"] == ["titler-1", "titler-2"]
    assert rows["ollama"]["reachable"] is True
    assert "llama3.2:latest" in rows["ollama"]["models"]
    for row in rows.values():
        assert set(row) >= {"name", "reachable", "models", "detail"}


def test_a_broken_or_silent_provider_is_unreachable_not_an_error(alice, settings):
    settings.NEXUS_PROVIDER_STATUS_TIMEOUT = 0.3
    started = time.monotonic()
    with (
        registry.override("failing", Failing()),
        registry.override("hanging", Hanging()),
        registry.override("cut", Cut()),
    ):
        response = alice.get(URL)
    assert response.status_code == 200
    assert time.monotonic() - started < 5
    rows = {row["name"]: row for row in response.json()}
    assert rows["failing"]["reachable"] is False
    assert rows["failing"]["detail"] == "Status check failed."
    assert rows["hanging"]["reachable"] is False and "0.3" in rows["hanging"]["detail"]
    assert rows["cut"]["detail"] == "cut: offline"


def test_providers_need_authentication(anon, db):
    assert_error(anon.get(URL), 401)


def test_generation_options_resolve_the_key_from_the_named_variable(settings):
    settings.NEXUS_PROVIDER_API_KEYS = {"GROQ_API_KEY": "gsk-test", "OPENAI_API_KEY": "sk-default"}
    agent = Agent(
        name="g",
        provider="openai",
        model="llama3-70b",
        base_url="https://api.groq.com/openai/v1",
        temperature=0.2,
        max_tokens=100,
        config={"api_key_env": "GROQ_API_KEY", "top_p": 0.9, "metadata": {"team": "x"}},
    )
    options = provider_config.generation_options_for(agent)
    assert options.api_key == "gsk-test"
    assert options.base_url == "https://api.groq.com/openai/v1"
    assert options.temperature == 0.2 and options.max_tokens == 100
    assert dict(options.extra) == {"top_p": 0.9}
    assert "gsk-test" not in repr(options)


def test_generation_options_fall_back_to_the_providers_default_key_and_url(settings):
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-default", "GOOGLE_API_KEY": "AIza-test"}
    settings.OPENAI_BASE_URL = "http://127.0.0.1:9/v1"
    settings.GEMINI_BASE_URL = ""
    openai = provider_config.generation_options_for(Agent(name="o", provider="openai", model="m"))
    assert openai.api_key == "sk-default" and openai.base_url == "http://127.0.0.1:9/v1"
    gemini = provider_config.generation_options_for(Agent(name="g", provider="gemini", model="m"))
    assert gemini.api_key == "AIza-test" and gemini.base_url is None
    local = provider_config.generation_options_for(Agent(name="l", provider="local", model="m"))
    assert local.api_key is None and local.base_url is None


def test_a_named_key_variable_that_is_unset_gives_no_key(settings):
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-default"}
    agent = Agent(name="o", provider="openai", model="m", config={"api_key_env": "GROQ_API_KEY"})
    assert provider_config.generation_options_for(agent).api_key is None


def test_configure_providers_passes_settings_and_is_idempotent(settings):
    with FakeOllama() as server:
        settings.OLLAMA_BASE_URL = server.base_url
        provider_config.configure_providers()
        first = registry.get("ollama")
        provider_config.configure_providers()
        assert registry.get("ollama") is first  # same settings: nothing rebuilt
        assert first.base_url == server.base_url.rstrip("/")
    settings.OLLAMA_BASE_URL = "http://127.0.0.1:9"
    provider_config.configure_providers()
    assert registry.get("ollama").base_url == "http://127.0.0.1:9"


async def test_complete_text_returns_the_whole_reply():
    with registry.override("titler", Titler()):
        agent = Agent(name="t", provider="titler", model="t-1", config={"reply": "Hello there"})
        assert await provider_config.complete_text(agent=agent, messages=[], max_tokens=5) == "Hello there"


@pytest.mark.parametrize(("provider", "kind"), [(Failing(), "unavailable"), (Cut(), "incomplete")])
async def test_complete_text_raises_provider_errors(provider, kind):
    with registry.override(provider.name, provider), pytest.raises(ProviderError) as caught:
        await provider_config.complete_text(
            agent=Agent(name="x", provider=provider.name, model="m"), messages=[]
        )
    assert caught.value.kind == kind


async def test_complete_text_of_an_unknown_provider_is_a_provider_error():
    with pytest.raises(ProviderError):
        await provider_config.complete_text(agent=Agent(name="x", provider="nope", model="m"), messages=[])


async def test_provider_statuses_never_raise(settings):
    settings.NEXUS_PROVIDER_STATUS_TIMEOUT = 0.2
    with registry.override("failing", Failing()), registry.override("hanging", Hanging()):
        statuses = await asyncio.wait_for(provider_config.provider_statuses(), 5)
    names = [s["name"] for s in statuses]
    assert names == sorted(names) and "failing" in names and "hanging" in names


def test_provider_deadlines_come_from_settings_and_the_agent_config(settings):
    settings.NEXUS_PROVIDER_CONNECT_TIMEOUT = 2.0
    settings.NEXUS_PROVIDER_FIRST_TOKEN_TIMEOUT = 20.0
    settings.NEXUS_PROVIDER_CHUNK_TIMEOUT = 7.0
    settings.NEXUS_PROVIDER_TOTAL_TIMEOUT = 90.0
    agent = Agent(name="t", provider="openai", model="m", config={})
    timeouts = provider_config.generation_options_for(agent).timeouts
    assert (timeouts.connect, timeouts.first_token, timeouts.between_chunks, timeouts.total) == (2, 20, 7, 90)
    agent.config = {"timeouts": {"between_chunks": 1.5, "total": 30}, "top_p": 0.5}
    options = provider_config.generation_options_for(agent)
    assert (options.timeouts.between_chunks, options.timeouts.total, options.timeouts.connect) == (1.5, 30, 2)
    assert "timeouts" not in options.extra and options.extra["top_p"] == 0.5
