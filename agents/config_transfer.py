"""Seed 002's configuration export and import (``/api/config/save_config`` and ``load_config``,
docs/dialects.md "Seed 002: config"), per user:

- ``app``: the app's face (name, description, icon), kept as given;
- ``models``: the chosen model of each kind (``llm``, ``embedding``, ...) by registry name, with
  ``apiConfig.modelUrl`` and ``apiConfig.apiKeyEnv`` shown from the registry; ``apiKey`` is always
  exported empty and ignored on import (with a note): Nexus never stores keys;
- ``data``: the knowledge selection (``selectedKbNames``, ``selectedKbModels``, ``selectedKbSources``);
- ``agents`` (Nexus's own addition): the user's agents, without ids of other users' agents and
  without secrets; an import updates the user's agent with the same id (or, failing that, name)
  and creates the others. Shared agents are never exported or changed by an import.

An import is all or nothing (one transaction).
"""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction

from agents.knowledge import knowledge_bases_readable
from agents.models import AGENT_EDITABLE_FIELDS, Agent, ModelEntry, UserConfig
from agents.services import agent_create_for_user, agent_update_for_user, storable_json_validate
from core.errors import ValidationFailed

DEFAULT_APP = {
    "name": "Nexus",
    "description": "",
    "icon": {"type": "preset", "avatarUri": "", "customUrl": ""},
}
KNOWLEDGE_KEYS = ("selectedKbNames", "selectedKbModels", "selectedKbSources")
MAX_LIST = 200
MAX_ITEM_CHARS = 500
MAX_AGENTS = 200
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
_SECRET_WORDS = ("api_key", "apikey", "secret", "password", "token")


def _config_of(user: Any) -> UserConfig:
    config, _ = UserConfig.objects.get_or_create(user=user)
    return config


def _string(value: Any, where: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ValidationFailed(
            f"{where} is a string of at most {limit} characters (no NUL).", details={where: ["A string."]}
        )
    return value


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise ValidationFailed(
            f"{where} is a list.", details={where: [f"A list of at most {MAX_LIST} strings."]}
        )
    return [_string(item, where, MAX_ITEM_CHARS) for item in value]


def _app(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationFailed("app is an object.", details={"app": ["An object."]})
    icon = value.get("icon") or {}
    if not isinstance(icon, dict):
        raise ValidationFailed("app.icon is an object.", details={"app.icon": ["An object."]})
    return {
        "name": _string(value.get("name"), "app.name", 200),
        "description": _string(value.get("description"), "app.description", 5000),
        "icon": {
            "type": _string(icon.get("type"), "app.icon.type", 32),
            "avatarUri": _string(icon.get("avatarUri"), "app.icon.avatarUri", 200_000),
            "customUrl": _string(icon.get("customUrl"), "app.icon.customUrl", 2000),
        },
    }


def _entry_for(user: Any, name: str) -> ModelEntry | None:
    return (
        ModelEntry.objects.filter(model_name=name, owner=user).first()
        or ModelEntry.objects.filter(model_name=name, owner__isnull=True).first()
    )


def _models(user: Any, value: Any, notes: list[str]) -> dict[str, dict[str, str]]:
    if not isinstance(value, dict) or len(value) > 40:
        raise ValidationFailed("models is an object of model kinds.", details={"models": ["An object."]})
    chosen: dict[str, dict[str, str]] = {}
    for kind, item in value.items():
        if not _KIND.match(str(kind)):
            raise ValidationFailed(
                "Invalid model kind.", details={"models": [f"{kind!r} is not a kind name."]}
            )
        if item is None:
            continue
        if not isinstance(item, dict):
            raise ValidationFailed(f"models.{kind} is an object.", details={f"models.{kind}": ["An object."]})
        name = _string(item.get("name"), f"models.{kind}.name", 200).strip()
        display = _string(item.get("displayName"), f"models.{kind}.displayName", 200)
        api = item.get("apiConfig") or {}
        if not isinstance(api, dict):
            raise ValidationFailed(
                f"models.{kind}.apiConfig is an object.", details={f"models.{kind}.apiConfig": ["An object."]}
            )
        if api.get("apiKey") not in (None, ""):
            notes.append(
                f"models.{kind}.apiConfig.apiKey was ignored: Nexus never stores keys; the operator "
                "sets the key in the environment and names its variable on the model (api_key_env)."
            )
        entry = _entry_for(user, name) if name else None
        url = api.get("modelUrl")
        if url not in (None, "") and (entry is None or url != entry.base_url):
            notes.append(
                f"models.{kind}.apiConfig.modelUrl was ignored: a model's URL is set on the model "
                "in the registry (/api/model/update, staff)."
            )
        if name:
            chosen[str(kind)] = {
                "name": name,
                "displayName": display or (entry.display_name if entry else ""),
            }
    return chosen


def _knowledge(value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict):
        raise ValidationFailed("data is an object.", details={"data": ["An object."]})
    return {key: _strings(value.get(key), f"data.{key}") for key in KNOWLEDGE_KEYS}


def _agent_export(agent: Agent) -> dict[str, Any]:
    exported: dict[str, Any] = {"id": str(agent.pk)}
    for name in AGENT_EDITABLE_FIELDS:
        exported[name] = getattr(agent, name)
    exported["config"] = {
        k: v
        for k, v in (agent.config or {}).items()
        if k.lower() == "api_key_env" or not any(word in k.lower() for word in _SECRET_WORDS)
    }
    return exported


def _agents_import(user: Any, value: Any, notes: list[str]) -> None:
    if not isinstance(value, list) or len(value) > MAX_AGENTS:
        raise ValidationFailed(
            "agents is a list.", details={"agents": [f"A list of at most {MAX_AGENTS} agents."]}
        )
    mine = {str(a.pk): a for a in Agent.objects.filter(owner=user)}
    by_name = {a.name: a for a in mine.values()}
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValidationFailed("An agent is an object.", details={f"agents[{index}]": ["An object."]})
        fields = {k: v for k, v in item.items() if k in AGENT_EDITABLE_FIELDS}
        config = fields.get("config")
        if isinstance(config, dict):
            dropped = [
                k for k in config if k.lower() != "api_key_env" and any(w in k.lower() for w in _SECRET_WORDS)
            ]
            if dropped:
                notes.append(f"agents[{index}].config: {', '.join(sorted(dropped))} ignored (never stored).")
                fields["config"] = {k: v for k, v in config.items() if k not in dropped}
        if "knowledge_bases" in fields:
            fields["knowledge_bases"], left_out = knowledge_bases_readable(
                fields["knowledge_bases"], owner=user
            )
            if left_out:
                notes.append(f"agents[{index}].knowledge_bases: {left_out} not found here, left out.")
        storable_json_validate(fields, field=f"agents[{index}]")
        target = mine.get(str(item.get("id", ""))) or by_name.get(str(item.get("name", "")))
        if target is not None:
            agent_update_for_user(user=user, agent=target, **fields)
        else:
            created = agent_create_for_user(user=user, **fields)
            mine[str(created.pk)] = created
            by_name[created.name] = created


def config_export(*, user: Any) -> dict[str, Any]:
    """The user's configuration in seed 002's shape (``load_config``'s ``config``)."""
    stored = _config_of(user)
    models: dict[str, Any] = {}
    for kind, chosen in (stored.models_selected or {}).items():
        entry = _entry_for(user, chosen.get("name", ""))
        models[kind] = {
            "name": chosen.get("name", ""),
            "displayName": chosen.get("displayName", ""),
            "apiConfig": {
                "apiKey": "",
                "modelUrl": entry.base_url if entry is not None else "",
                "apiKeyEnv": entry.api_key_env if entry is not None else "",
            },
        }
    knowledge = stored.knowledge or {}
    return {
        "app": stored.app or DEFAULT_APP,
        "models": models,
        "data": {key: list(knowledge.get(key, [])) for key in KNOWLEDGE_KEYS},
        "agents": [_agent_export(a) for a in Agent.objects.filter(owner=user).order_by("name", "created_at")],
    }


@transaction.atomic
def config_import(*, user: Any, body: dict[str, Any]) -> list[str]:
    """Save seed 002's configuration for ``user`` (the parts present); the notes say what was
    ignored and why."""
    notes: list[str] = []
    stored = _config_of(user)
    if "app" in body:
        stored.app = _app(body["app"] or {})
    if "models" in body:
        stored.models_selected = _models(user, body["models"] or {}, notes)
    if "data" in body:
        stored.knowledge = _knowledge(body["data"] or {})
    if "agents" in body and body["agents"] is not None:
        _agents_import(user, body["agents"], notes)
    storable_json_validate([stored.app, stored.models_selected, stored.knowledge], field="config")
    stored.save()
    return notes
