"""Agents over REST: owners, outsiders, staff and anonymous callers on every endpoint."""

from __future__ import annotations

import uuid

import pytest

from agents.models import Agent
from runs.models import Run
from tests.api.conftest import assert_error, make_conversation

pytestmark = pytest.mark.django_db

LIST = "/api/agents/"


def detail(agent) -> str:
    return f"/api/agents/{agent.pk}/"


NEW = {"name": "Poet", "provider": "local", "model": "smollm2-135m-instruct", "temperature": 0.5}


# --- list -------------------------------------------------------------------------------------


def test_list_shows_mine_and_shared_but_not_others(alice, alice_agent, shared_agent, mallory_agent):
    response = alice.get(LIST)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    names = {row["name"] for row in body["results"]}
    assert names == {"Alice's agent", "Shared helper"}
    mine = next(row for row in body["results"] if row["name"] == "Alice's agent")
    shared = next(row for row in body["results"] if row["name"] == "Shared helper")
    assert mine["can_edit"] is True and mine["shared"] is False
    assert shared["can_edit"] is False and shared["shared"] is True and shared["owner_id"] is None


def test_staff_see_every_agent(operator, alice_agent, shared_agent, mallory_agent):
    body = operator.get(LIST).json()
    assert body["count"] == 3
    assert all(row["can_edit"] for row in body["results"])


def test_list_filters_by_status_workspace_and_provider(alice, user):
    Agent.objects.create(owner=user, name="A", provider="local", model="m", workspace="research")
    Agent.objects.create(owner=user, name="B", provider="ollama", model="m", status="paused")
    Agent.objects.create(owner=user, name="C", provider="openai", model="m", workspace="research")

    def names(**params):
        return sorted(row["name"] for row in alice.get(LIST, params).json()["results"])

    assert names(workspace="research") == ["A", "C"]
    assert names(status="paused") == ["B"]
    assert names(provider="openai") == ["C"]
    assert names(provider="openai", workspace="research") == ["C"]
    assert names(provider="gemini") == []


def test_list_refuses_an_unknown_status_filter(alice, db):
    body = assert_error(alice.get(LIST, {"status": "sleeping"}), 400, "validation_error")
    assert "status" in body["errors"]


def test_list_is_paginated(alice, user):
    for index in range(25):
        Agent.objects.create(owner=user, name=f"Agent {index:02}", provider="local", model="m")
    first = alice.get(LIST).json()
    assert first["count"] == 25 and len(first["results"]) == 20 and first["next"]
    second = alice.get(LIST, {"page": 2}).json()
    assert len(second["results"]) == 5 and second["next"] is None
    assert len(alice.get(LIST, {"page_size": 5}).json()["results"]) == 5
    assert_error(alice.get(LIST, {"page": 99}), 404, "not_found")


def test_list_needs_authentication(anon, db):
    assert_error(anon.get(LIST), 401, "not_authenticated")


# --- create -----------------------------------------------------------------------------------


def test_create_makes_an_agent_owned_by_the_caller(alice, user):
    response = alice.post(LIST, NEW, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["owner_id"] == user.pk and body["shared"] is False
    assert body["temperature"] == 0.5 and body["status"] == "active"
    agent = Agent.objects.get(pk=body["id"])
    assert agent.owner == user and agent.name == "Poet"


def test_create_with_tools_and_config(operator, db):
    payload = {
        **NEW,
        "tools": [{"name": "current_time", "description": "Now", "parameters": {"type": "object"}}],
        "config": {"api_key_env": "GROQ_API_KEY", "top_p": 0.9},
    }
    body = operator.post(LIST, payload, format="json").json()
    assert body["tools"][0]["name"] == "current_time"
    assert body["tools"][0]["execution"] == "server"
    assert body["config"] == {"api_key_env": "GROQ_API_KEY", "top_p": 0.9}


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"provider": "local", "model": "m"}, "name"),
        ({"name": "x", "provider": "local"}, "model"),
        ({**NEW, "provider": "skynet"}, "provider"),
        ({**NEW, "temperature": 7}, "temperature"),
        ({**NEW, "max_tokens": 0}, "max_tokens"),
        ({**NEW, "status": "sleeping"}, "status"),
        ({**NEW, "workspace": "not a slug"}, "workspace"),
        ({**NEW, "base_url": "not a url"}, "base_url"),
        ({**NEW, "capabilities": "chat"}, "capabilities"),
        ({**NEW, "tools": [{"name": "bad name!"}]}, "tools"),
        ({**NEW, "tools": [{"name": "t"}, {"name": "t"}]}, "tools[1]"),
        ({**NEW, "config": {"api_key": "sk-123"}}, "config"),
        ({**NEW, "config": {"api_key_env": "HOME"}}, "config"),
        ({**NEW, "name": "x" * 121}, "name"),
        ({**NEW, "name": "nul\x00"}, "name"),
        ({**NEW, "config": {"top_p": "nul\x00"}}, "config"),
        ({**NEW, "config": {"nul\x00": 1}}, "config"),
        ({**NEW, "config": {"timeouts": 5}}, "config"),
        ({**NEW, "config": {"timeouts": {"between_chunks": 0}}}, "config"),
        ({**NEW, "config": {"timeouts": {"total": 4000}}}, "config"),
        ({**NEW, "config": {"timeouts": {"connect": "5"}}}, "config"),
        ({**NEW, "config": {"timeouts": {"sleep": 5}}}, "config"),
    ],
)
def test_create_refuses_bad_input_with_field_errors(alice, db, payload, field):
    body = assert_error(alice.post(LIST, payload, format="json"), 400, "validation_error")
    assert field in body["errors"], body
    assert Agent.objects.count() == 0


def test_a_secret_in_config_is_never_stored(alice, db):
    response = alice.post(LIST, {**NEW, "config": {"openai_api_key": "sk-live-123"}}, format="json")
    body = assert_error(response, 400)
    assert "sk-live-123" not in response.content.decode()
    assert "environment" in body["errors"]["config"][0]


def test_only_staff_create_shared_agents(alice, operator, db):
    assert_error(alice.post(LIST, {**NEW, "shared": True}, format="json"), 403, "forbidden")
    response = operator.post(LIST, {**NEW, "shared": True}, format="json")
    assert response.status_code == 201
    assert response.json()["owner_id"] is None and response.json()["shared"] is True


def test_create_needs_authentication(anon, db):
    assert_error(anon.post(LIST, NEW, format="json"), 401)


def test_create_refuses_a_non_json_body(alice, db):
    response = alice.generic("POST", LIST, "name=x", content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")


# --- retrieve, update, delete -----------------------------------------------------------------


def test_owner_and_staff_get_an_agent(alice, operator, alice_agent):
    assert alice.get(detail(alice_agent)).json()["name"] == "Alice's agent"
    assert operator.get(detail(alice_agent)).status_code == 200


def test_anyone_signed_in_gets_a_shared_agent(mallory, shared_agent):
    assert mallory.get(detail(shared_agent)).status_code == 200


@pytest.mark.parametrize("method", ["get", "patch", "put", "delete"])
def test_another_users_agent_is_404_for_every_method(mallory, alice_agent, method):
    response = getattr(mallory, method)(
        detail(alice_agent), {"name": "mine now", "model": "m"}, format="json"
    )
    body = assert_error(response, 404, "not_found")
    assert "Alice" not in body["detail"]
    alice_agent.refresh_from_db()
    assert alice_agent.name == "Alice's agent"


def test_an_unknown_agent_is_404_like_a_foreign_one(alice, db):
    foreign = assert_error(alice.get(f"/api/agents/{uuid.uuid4()}/"), 404)
    assert foreign["detail"] == "Agent not found."


@pytest.mark.parametrize("method", ["get", "patch", "put", "delete"])
def test_agent_detail_needs_authentication(anon, alice_agent, method):
    assert_error(getattr(anon, method)(detail(alice_agent)), 401)


def test_owner_patches_an_agent(alice, alice_agent):
    response = alice.patch(detail(alice_agent), {"temperature": 1.2, "status": "paused"}, format="json")
    assert response.status_code == 200
    alice_agent.refresh_from_db()
    assert alice_agent.temperature == 1.2 and alice_agent.status == "paused"
    assert alice_agent.name == "Alice's agent"


def test_patch_refuses_bad_input(alice, alice_agent):
    body = assert_error(alice.patch(detail(alice_agent), {"temperature": -1}, format="json"), 400)
    assert "temperature" in body["errors"]
    body = assert_error(alice.patch(detail(alice_agent), {"provider": "nope"}, format="json"), 400)
    assert "provider" in body["errors"]


def test_put_needs_the_required_fields(alice, alice_agent):
    body = assert_error(alice.put(detail(alice_agent), {"temperature": 1}, format="json"), 400)
    assert set(body["errors"]) >= {"name", "model"}
    response = alice.put(detail(alice_agent), {"name": "Renamed", "model": "other"}, format="json")
    assert response.status_code == 200
    assert response.json()["name"] == "Renamed" and response.json()["model"] == "other"


def test_only_staff_change_shared_agents(alice, operator, shared_agent):
    assert_error(alice.patch(detail(shared_agent), {"name": "Hijacked"}, format="json"), 403, "forbidden")
    assert_error(alice.delete(detail(shared_agent)), 403)
    assert operator.patch(detail(shared_agent), {"name": "Renamed"}, format="json").status_code == 200
    shared_agent.refresh_from_db()
    assert shared_agent.name == "Renamed"


def test_staff_change_and_delete_a_users_agent(operator, alice_agent):
    assert operator.patch(detail(alice_agent), {"status": "paused"}, format="json").status_code == 200
    assert operator.delete(detail(alice_agent)).status_code == 204
    assert not Agent.objects.filter(pk=alice_agent.pk).exists()


def test_owner_deletes_an_agent(alice, alice_agent):
    response = alice.delete(detail(alice_agent))
    assert response.status_code == 204
    assert not Agent.objects.filter(pk=alice_agent.pk).exists()


def test_an_agent_with_messages_is_not_deleted_but_can_be_paused(alice, user, alice_agent):
    make_conversation(user, alice_agent, messages=("hi", "hello"))
    assert_error(alice.delete(detail(alice_agent)), 409, "conflict")
    assert Agent.objects.filter(pk=alice_agent.pk).exists()
    assert alice.patch(detail(alice_agent), {"status": "paused"}, format="json").status_code == 200


# --- status -----------------------------------------------------------------------------------


def test_status_has_the_seed_001_shape(alice, user, alice_agent):
    conversation = make_conversation(user, alice_agent, messages=("hi", "hello", "again", "yes"))
    Run.objects.create(conversation=conversation, agent=alice_agent, status="running")
    response = alice.get(detail(alice_agent) + "status/")
    assert response.status_code == 200
    body = response.json()
    assert body["agent_id"] == str(alice_agent.pk)
    assert body["status"] == "active"
    assert body["owner_id"] == user.pk
    assert body["is_running"] is True
    assert body["message_count"] == 2
    assert body["capabilities"] == [] and body["interaction_modes"] == []
    assert body["last_active"] is None
    assert body["metadata"] == {
        "provider": "local",
        "model": "smollm2",
        "cooldown_until": None,
        "active_conversations": 1,
    }


def test_status_of_a_shared_agent_counts_only_my_conversations(
    alice, mallory, user, other_user, shared_agent
):
    make_conversation(other_user, shared_agent, messages=("secret", "reply"))
    mine = alice.get(detail(shared_agent) + "status/").json()
    assert mine["message_count"] == 0 and mine["metadata"]["active_conversations"] == 0
    assert mallory.get(detail(shared_agent) + "status/").json()["message_count"] == 1


def test_status_of_another_users_agent_is_404(mallory, alice_agent):
    assert_error(mallory.get(detail(alice_agent) + "status/"), 404)


def test_status_needs_authentication(anon, alice_agent):
    assert_error(anon.get(detail(alice_agent) + "status/"), 401)


def test_staff_get_any_agents_status(operator, alice_agent):
    assert operator.get(detail(alice_agent) + "status/").status_code == 200


# --- throttle ---------------------------------------------------------------------------------


def test_agent_operations_are_throttled_per_user(alice, mallory, throttle_rate, alice_agent):
    throttle_rate("agent_ops", "3/min")
    assert alice.get(LIST).status_code == 200
    assert alice.get(detail(alice_agent)).status_code == 200
    assert alice.get(detail(alice_agent) + "status/").status_code == 200
    response = alice.post(LIST, NEW, format="json")
    body = assert_error(response, 429, "rate_limited")
    assert 1 <= int(response["Retry-After"]) <= 60
    assert "Try again" in body["detail"]
    assert mallory.get(LIST).status_code == 200  # another user's budget is their own
