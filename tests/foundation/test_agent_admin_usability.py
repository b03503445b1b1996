"""The admin checks an agent's provider against the registry, and says why an agent cannot answer:
in a column of the list and on the change page."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents.models import Agent

pytestmark = pytest.mark.django_db

ADD = "admin:agents_agent_add"
LIST = "admin:agents_agent_changelist"


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def form_data(**changes):
    data = {
        "name": "Typo",
        "emoji": "🤖",
        "colour": "",
        "description": "",
        "owner": "",
        "workspace": "default",
        "status": "active",
        "cooldown_until_0": "",
        "cooldown_until_1": "",
        "provider": "local",
        "model": "smollm2-135m-instruct",
        "base_url": "",
        "temperature": "",
        "max_tokens": "",
        "config": "{}",
        "system_prompt": "",
        "personality": "",
        "capabilities": "[]",
        "interaction_modes": "[]",
        "tools": "[]",
        "knowledge_bases": "[]",
        "knowledge_mode": "tool",
    }
    data.update(changes)
    return data


def test_an_unknown_provider_is_refused_with_a_clear_error(staff_client):
    response = staff_client.post(reverse(ADD), form_data(provider="locall"))
    assert response.status_code == 200  # the form again, with its errors
    errors = response.context["adminform"].form.errors
    assert errors["provider"] == ['Unknown provider "locall": choose one of gemini, local, ollama, openai.']
    assert "Unknown provider &quot;locall&quot;: choose one of" in response.content.decode()
    assert not Agent.objects.filter(name="Typo").exists()


def test_a_known_provider_is_saved_and_the_form_names_the_choices(staff_client):
    page = staff_client.get(reverse(ADD)).content.decode()
    assert "One of the registered providers: gemini, local, ollama, openai." in page
    response = staff_client.post(reverse(ADD), form_data(provider="local"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Agent.objects.get(name="Typo").provider == "local"


@pytest.mark.parametrize("model", ["", "   ", "smol lm", "bad\tname"])
def test_a_model_must_be_a_name(staff_client, model):
    response = staff_client.post(reverse(ADD), form_data(model=model))
    assert response.status_code == 200
    assert "model" in response.context["adminform"].form.errors


@pytest.mark.parametrize(
    ("emoji", "colour", "field"), [("ab", "", "emoji"), ("🦉", "blue", "colour"), ("🦉🦉", "", "emoji")]
)
def test_the_avatar_fields_are_checked_in_the_admin_too(staff_client, emoji, colour, field):
    response = staff_client.post(reverse(ADD), form_data(emoji=emoji, colour=colour))
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors


def usable_cell(staff_client, agent) -> str:
    body = staff_client.get(reverse(LIST)).content.decode()
    row = body[body.index(f"/admin/agents/agent/{agent.pk}/change/") :]
    row = row[: row.index("</tr>")]
    return row


def test_the_list_and_the_change_page_say_why_an_agent_cannot_answer(staff_client, settings):
    settings.NEXUS_PROVIDER_API_KEYS = {}
    settings.OPENAI_BASE_URL = ""
    fine = Agent.objects.create(name="Fine", provider="local", model="smollm2")
    typo = Agent.objects.create(name="Typo", provider="locall", model="smollm2")  # saved before the check
    keyless = Agent.objects.create(name="Keyless", provider="openai", model="gpt-4o-mini")
    paused = Agent.objects.create(name="Resting", provider="local", model="smollm2", status="paused")
    named = Agent.objects.create(
        name="Named key",
        provider="openai",
        model="m",
        config={"api_key_env": "GROQ_API_KEY"},
        base_url="https://api.groq.com/openai/v1",
    )

    assert 'data-usable="yes">yes<' in usable_cell(staff_client, fine)
    assert "Unknown provider &quot;locall&quot;: choose one of gemini, local, ollama, openai." in usable_cell(
        staff_client, typo
    )
    assert "No API key: the variable OPENAI_API_KEY is not set on the server." in usable_cell(
        staff_client, keyless
    )
    assert "Paused: activate it to let it answer." in usable_cell(staff_client, paused)
    assert "No API key: the variable GROQ_API_KEY is not set on the server." in usable_cell(
        staff_client, named
    )

    change = staff_client.get(reverse("admin:agents_agent_change", args=[keyless.pk])).content.decode()
    assert '<ul class="agent-usable" data-usable="no"><li>No API key: the variable OPENAI_API_KEY' in change
    change = staff_client.get(reverse("admin:agents_agent_change", args=[fine.pk])).content.decode()
    assert 'data-usable="yes">Yes: it can answer' in change


def test_an_openai_agent_at_its_own_server_needs_no_key_and_one_with_the_key_is_usable(
    staff_client, settings
):
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-test"}
    settings.OPENAI_BASE_URL = ""
    hosted = Agent.objects.create(name="Hosted", provider="openai", model="gpt-4o-mini")
    own = Agent.objects.create(
        name="Own server", provider="openai", model="smollm2", base_url="http://127.0.0.1:8080/v1"
    )
    assert 'data-usable="yes"' in usable_cell(staff_client, hosted)
    assert 'data-usable="yes"' in usable_cell(staff_client, own)
