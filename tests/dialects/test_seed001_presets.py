"""Provider presets (``NEXUS_PROVIDER_PRESETS``): a name such as seed 001's ``groq`` resolves to an
OpenAI-compatible URL and the variable holding its key, which goes to that host only."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ImproperlyConfigured

from agents import provider_config
from agents.models import Agent
from nexus import settings as nexus_settings

GROQ = {"base_url": "https://api.groq.com/openai/v1", "api_key_env": "GROQ_API_KEY", "model": "llama-3-70b"}


def _agent(preset: str | None, **config) -> Agent:
    metadata = {"provider_preset": preset} if preset else {}
    return Agent(name="a", provider="openai", model="m", config={"metadata": metadata, **config})


def test_an_agent_of_a_preset_calls_the_presets_url_with_its_key(settings):
    settings.NEXUS_PROVIDER_PRESETS = {"groq": GROQ}
    settings.NEXUS_PROVIDER_API_KEYS = {"GROQ_API_KEY": "gsk-1", "OPENAI_API_KEY": "sk-1"}
    options = provider_config.generation_options_for(_agent("groq"))
    assert options.base_url == GROQ["base_url"] and options.api_key == "gsk-1"
    assert "metadata" not in options.extra and "api_key_env" not in options.extra
    assert provider_config.agent_problems(_agent("groq")) == []


def test_a_preset_key_never_goes_to_another_host(settings):
    settings.NEXUS_PROVIDER_PRESETS = {"groq": GROQ, "other": {"base_url": "https://other.example/v1"}}
    settings.NEXUS_PROVIDER_API_KEYS = {"GROQ_API_KEY": "gsk-1"}
    # an agent naming the groq key but pointing at the other preset's host gets no key
    options = provider_config.generation_options_for(_agent("other", api_key_env="GROQ_API_KEY"))
    assert options.base_url == "https://other.example/v1" and options.api_key is None


def test_without_the_operators_preset_a_name_is_no_provider(settings):
    settings.NEXUS_PROVIDER_PRESETS = {}
    assert provider_config.provider_preset("groq") is None
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-1"}
    options = provider_config.generation_options_for(_agent("groq"))
    assert options.base_url != GROQ["base_url"]


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"groq": {"api_key_env": "GROQ_API_KEY"}}',
        '{"groq": {"base_url": "https://x", "api_key_env": "GROQ"}}',
    ],
)
def test_a_malformed_setting_fails_loudly(monkeypatch, raw):
    monkeypatch.setenv("NEXUS_PROVIDER_PRESETS", raw)
    with pytest.raises(ImproperlyConfigured):
        nexus_settings._provider_presets()


def test_the_setting_reads_presets(monkeypatch):
    monkeypatch.setenv("NEXUS_PROVIDER_PRESETS", json.dumps({"groq": GROQ}))
    assert nexus_settings._provider_presets() == {"groq": GROQ}
