"""`seed_demo` is idempotent: running it twice leaves the same rows. With DEBUG off it refuses
to create accounts with its published passwords unless the environment names the passwords."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from agents.models import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _development(request, settings):
    """A development machine (DEBUG on), as `make run`, unless the test is about production."""
    settings.DEBUG = "production" not in request.node.name
    settings.NEXUS_DEMO_PASSWORD = ""
    settings.NEXUS_ADMIN_PASSWORD = ""


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


def test_in_production_it_refuses_the_published_passwords(settings):
    with pytest.raises(CommandError, match="NEXUS_DEMO_PASSWORD and NEXUS_ADMIN_PASSWORD"):
        call_command("seed_demo")
    assert not get_user_model().objects.exists()  # nothing half-made
    assert not Agent.objects.exists()


def test_in_production_it_uses_the_passwords_from_the_environment(settings, capsys, client):
    settings.NEXUS_DEMO_PASSWORD = "a-demo-secret-from-env"
    settings.NEXUS_ADMIN_PASSWORD = "an-admin-secret-from-env"
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "a-demo-secret-from-env" not in out and "an-admin-secret-from-env" not in out
    assert "<the password in NEXUS_DEMO_PASSWORD>" in out
    assert client.login(username="admin", password="an-admin-secret-from-env")
    assert not client.login(username="demo", password="nexus-demo-password")
    assert client.login(username="demo", password="a-demo-secret-from-env")


def test_in_production_it_refuses_only_the_account_it_would_create_unsafely(settings):
    get_user_model().objects.create_user(username="admin", password="chosen-by-the-operator-1")
    with pytest.raises(CommandError) as refused:
        call_command("seed_demo")
    assert "NEXUS_DEMO_PASSWORD" in str(refused.value)
    assert "NEXUS_ADMIN_PASSWORD" not in str(refused.value)  # it exists: its password is kept
    settings.NEXUS_DEMO_PASSWORD = "a-demo-secret-from-env"
    call_command("seed_demo")
    assert get_user_model().objects.get(username="admin").check_password("chosen-by-the-operator-1")
