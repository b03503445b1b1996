"""`seed_demo` is idempotent: running it twice leaves the same rows."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from agents.models import Agent

pytestmark = pytest.mark.django_db


def _snapshot():
    users = sorted(get_user_model().objects.values_list("username", "password", "is_staff"))
    agents = sorted(Agent.objects.values_list("id", "name", "provider", "model", "status", "owner_id"))
    return users, agents


def test_seed_demo_twice_gives_the_same_rows(capsys):
    call_command("seed_demo")
    first = _snapshot()
    call_command("seed_demo")
    assert _snapshot() == first
    users, agents = first
    assert [u[0] for u in users] == ["admin", "demo"]
    providers = {a[2]: a[4] for a in agents}
    assert providers["local"] == "active"
    assert {"ollama", "openai", "gemini"} <= set(providers)


def test_it_prints_the_demo_credentials_that_work(capsys, client):
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "demo / nexus-demo-password" in out
    assert client.login(username="demo", password="nexus-demo-password")


def test_remote_agents_are_paused_without_their_keys(settings):
    settings.NEXUS_PROVIDER_API_KEYS = {}
    settings.OLLAMA_BASE_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    call_command("seed_demo")
    assert set(Agent.objects.exclude(provider="local").values_list("status", flat=True)) == {"paused"}


def test_an_openai_key_activates_the_openai_example(settings):
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-test"}
    call_command("seed_demo")
    assert Agent.objects.get(provider="openai").status == "active"
    assert Agent.objects.get(provider="openai").config == {"api_key_env": "OPENAI_API_KEY"}
