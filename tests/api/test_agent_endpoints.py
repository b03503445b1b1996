"""Who may choose where an agent connects (``base_url``) and which operator key it uses
(``config.api_key_env``): staff only, on every front door that writes agents (POST, PUT, PATCH,
an inline agent of a new conversation)."""

from __future__ import annotations

import pytest

from agents.models import Agent
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db

LIST = "/api/agents/"
NEW = {"name": "Poet", "provider": "openai", "model": "gpt-4o-mini"}
ELSEWHERE = "https://collector.example/v1"


def detail(agent: Agent) -> str:
    return f"/api/agents/{agent.pk}/"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"base_url": ELSEWHERE}, "base_url"),
        ({"config": {"api_key_env": "OPENAI_API_KEY"}}, "api_key_env"),
        ({"base_url": "http://127.0.0.1:8000/v1", "config": {"api_key_env": "GROQ_API_KEY"}}, "base_url"),
        ({"provider": "gemini", "config": {"http_options": {"base_url": "http://10.0.0.1/"}}}, "base_url"),
    ],
)
def test_only_staff_make_an_agent_with_an_endpoint_or_key_variable(alice, operator, user, fields, field):
    body = assert_error(alice.post(LIST, {**NEW, **fields}, format="json"), 403, "forbidden")
    assert "Only staff" in body["detail"] and field in body["detail"]
    assert not Agent.objects.filter(owner=user).exists()
    assert alice.post(LIST, NEW, format="json").status_code == 201  # on the operator's endpoints
    response = operator.post(LIST, {**NEW, **fields}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["config"] == fields.get("config", {})
    assert response.json()["base_url"] == fields.get("base_url", "")


def test_it_refuses_a_users_change_of_endpoint_or_key_variable_but_not_an_unchanged_one(
    alice, user, alice_agent
):
    for fields in ({"base_url": ELSEWHERE}, {"config": {"api_key_env": "OPENAI_API_KEY"}}):
        assert_error(alice.patch(detail(alice_agent), fields, format="json"), 403, "forbidden")
        put = {"name": "A", "model": "m", **fields}
        assert_error(alice.put(detail(alice_agent), put, format="json"), 403, "forbidden")
    alice_agent.refresh_from_db()
    assert alice_agent.base_url == "" and "api_key_env" not in alice_agent.config
    # An agent saved before the rule: a full PUT with its values as they are, then clearing them.
    older = Agent.objects.create(
        owner=user, name="Old", provider="openai", model="m", base_url=ELSEWHERE,
        config={"api_key_env": "OPENAI_API_KEY"},
    )  # fmt: skip
    same = {
        "name": "Renamed",
        "model": "m",
        "base_url": ELSEWHERE,
        "config": {"api_key_env": "OPENAI_API_KEY"},
    }
    assert alice.put(detail(older), same, format="json").status_code == 200
    assert alice.patch(detail(older), {"base_url": "", "config": {}}, format="json").status_code == 200
    older.refresh_from_db()
    assert older.name == "Renamed" and older.base_url == "" and older.config == {}


def test_it_refuses_an_inline_agent_with_an_endpoint_in_a_new_conversation(alice, user):
    spec = {"provider": "openai", "model": "m", "base_url": ELSEWHERE}
    assert_error(
        alice.post("/api/conversations/", {"agents": {"primary": spec}}, format="json"), 403, "forbidden"
    )
    spec = {"provider": "openai", "model": "m", "config": {"api_key_env": "OPENAI_API_KEY"}}
    assert_error(
        alice.post("/api/conversations/", {"agents": {"primary": spec}}, format="json"), 403, "forbidden"
    )
    assert not Agent.objects.filter(owner=user).exists()
