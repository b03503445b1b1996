"""Seed 002's ``/api/config/save_config`` and ``load_config``: the user's app, model choices,
knowledge selection and agents as JSON, round-tripped, never a secret."""

from __future__ import annotations

import json

import pytest

from agents.models import Agent, ModelEntry

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-live-0123456789abcdef0123"


def _config(**overrides) -> dict:
    config = {
        "app": {
            "name": "Research desk",
            "description": "Finds things.",
            "icon": {"type": "custom", "avatarUri": "", "customUrl": "https://example.com/i.png"},
        },
        "models": {
            "llm": {
                "name": "house-llm",
                "displayName": "House LLM",
                "apiConfig": {"apiKey": SECRET, "modelUrl": "https://elsewhere.example/v1"},
            },
            "embedding": {
                "name": "house-embed",
                "displayName": "",
                "apiConfig": {"apiKey": "", "modelUrl": ""},
            },
        },
        "data": {
            "selectedKbNames": ["handbook", "faq"],
            "selectedKbModels": ["house-embed"],
            "selectedKbSources": ["handbook.pdf"],
        },
        "agents": [
            {
                "name": "Librarian",
                "provider": "openai",
                "model": "house-llm",
                "system_prompt": "Cite your sources.",
                "temperature": 0.3,
                "config": {"api_key": SECRET, "allowed_models": ["house-llm"]},
            }
        ],
    }
    config.update(overrides)
    return config


@pytest.fixture
def house_models(db):
    ModelEntry.objects.create(
        model_name="house-llm",
        provider="openai",
        base_url="https://llm.internal.example/v1",
        api_key_env="HOUSE_API_KEY",
    )
    ModelEntry.objects.create(model_name="house-embed", provider="openai", model_type="embedding")


def test_save_then_load_round_trips_without_secrets(alice, mallory, house_models):
    saved = alice.post("/api/config/save_config", _config(), format="json")
    assert saved.status_code == 200, saved.content
    body = saved.json()
    assert body["message"] == "Configuration saved successfully" and body["status"] == "saved"
    notes = " ".join(body["notes"])
    assert "apiKey was ignored" in notes and "modelUrl was ignored" in notes and "api_key ignored" in notes

    loaded = alice.get("/api/config/load_config")
    assert loaded.status_code == 200
    assert SECRET not in loaded.content.decode()
    config = loaded.json()["config"]
    assert config["app"] == _config()["app"]
    assert config["data"] == _config()["data"]
    assert config["models"]["llm"] == {
        "name": "house-llm",
        "displayName": "House LLM",
        "apiConfig": {
            "apiKey": "",
            "modelUrl": "https://llm.internal.example/v1",
            "apiKeyEnv": "HOUSE_API_KEY",
        },
    }
    assert config["models"]["embedding"]["apiConfig"]["apiKey"] == ""
    (agent,) = config["agents"]
    assert agent["name"] == "Librarian" and agent["system_prompt"] == "Cite your sources."
    assert agent["config"] == {"allowed_models": ["house-llm"]}
    assert Agent.objects.get(pk=agent["id"]).owner is not None

    # what was loaded saves back unchanged: the agent is updated by id, not duplicated
    again = alice.post("/api/config/save_config", config, format="json")
    assert again.status_code == 200 and "notes" not in again.json()
    assert alice.get("/api/config/load_config").json()["config"] == config
    assert Agent.objects.filter(name="Librarian").count() == 1

    # and another user may import it: their own copy of the agent, the same choices
    assert mallory.post("/api/config/save_config", config, format="json").status_code == 200
    theirs = mallory.get("/api/config/load_config").json()["config"]
    assert theirs["agents"][0]["id"] != agent["id"]
    assert {**theirs, "agents": None} == {**config, "agents": None}
    assert [a["name"] for a in theirs["agents"]] == ["Librarian"]
    assert Agent.objects.filter(name="Librarian").count() == 2


def test_a_fresh_user_loads_defaults(alice):
    config = alice.get("/api/config/load_config").json()["config"]
    assert config["app"]["name"] and set(config["app"]["icon"]) == {"type", "avatarUri", "customUrl"}
    assert config["models"] == {} and config["agents"] == []
    assert config["data"] == {"selectedKbNames": [], "selectedKbModels": [], "selectedKbSources": []}


def test_an_import_is_all_or_nothing_and_bad_shapes_are_refused(alice, house_models):
    # a user may not point an agent elsewhere: the whole import is refused
    bad_agent = _config(
        agents=[{"name": "Spy", "provider": "openai", "model": "m", "base_url": "http://10.0.0.1/v1"}]
    )
    answer = alice.post("/api/config/save_config", bad_agent, format="json")
    assert answer.status_code == 403 and answer.json()["code"] == "forbidden"
    assert alice.get("/api/config/load_config").json()["config"]["app"]["name"] == "Nexus"
    assert not Agent.objects.filter(name="Spy").exists()
    for body in (
        {"app": "not an object"},
        {"data": {"selectedKbNames": "handbook"}},
        {"data": {"selectedKbNames": [1, 2]}},
        {"models": {"llm": "house-llm"}},
        {"models": {"bad kind!": {"name": "x"}}},
        {"agents": {"name": "x"}},
        {"agents": [{"name": "", "provider": "openai", "model": "m"}]},
    ):
        response = alice.post("/api/config/save_config", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["code"] == "validation_error"
    response = alice.post("/api/config/save_config", b"[1]", content_type="application/json")
    assert response.status_code == 400
    assert alice.post("/api/config/load_config").status_code == 405
    assert json.loads(alice.get("/api/config/load_config").content)["config"]["agents"] == []


def test_nul_characters_are_refused_not_stored(alice):
    for body in (
        {"models": {"llm": {"name": "a\x00b"}}},
        {"app": {"name": "a\x00"}},
        {"data": {"selectedKbNames": ["\x00"]}},
        {"agents": [{"name": "N\x00", "provider": "openai", "model": "m"}]},
    ):
        response = alice.post("/api/config/save_config", body, format="json")
        assert response.status_code == 400, (body, response.content)
