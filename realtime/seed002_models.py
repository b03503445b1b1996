"""Seed 002's model management, configuration and reload (docs/dialects.md "Seed 002: models"):

- ``/api/model/{create,update,delete,list,healthcheck,get_connect_status,update_connect_status}``
  and ``/api/me/{model/list,healthcheck,model/healthcheck}`` in the seed's envelope with
  ``code: 200`` (errors: the envelope with the HTTP status as ``code``, as the conversation paths);
- ``/api/config/save_config`` and ``/api/config/load_config`` in the seed's bare shapes;
- ``POST /api/agent/reload_config``.

The registry, the health checks and the configuration live in ``agents.model_registry``,
``agents.config_transfer`` and ``agents.config_reload``; these views only translate.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from agents import config_transfer, model_registry
from agents.config_reload import config_reload
from agents.model_registry import ModelInfo
from agents.provider_config import provider_statuses
from core.auth import User
from core.errors import ValidationFailed
from realtime import http_views as native
from realtime.seed002_files import methods_allow, params
from realtime.seed002_views import endpoint

# /api/me/* answers the status in the words the seed shows ("AVAILABLE"); /api/model/* in the
# registry's own (lowercase) words.
ME_STATUS = {"available": "AVAILABLE", "unavailable": "UNAVAILABLE", "detecting": "DETECTING"}


def ok(message: str, data: Any) -> JsonResponse:
    return JsonResponse({"code": 200, "message": message, "data": data})


def _body(request: HttpRequest) -> dict[str, Any]:
    return params(request) if request.method == "GET" else native._json_body(request)


def _timeout(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValidationFailed("timeout is a number of seconds.", details={"timeout": ["Seconds."]}) from None
    if not 0 < seconds < float("inf"):
        raise ValidationFailed("timeout is a number of seconds.", details={"timeout": ["Above 0."]})
    return seconds


def _health(info: ModelInfo, health: model_registry.Health, *, me: bool = False) -> dict[str, Any]:
    status = health.connect_status
    return {
        "status": "Connected" if health.available else "Disconnected",
        "desc": health.detail,
        "connect_status": ME_STATUS.get(status, status.upper()) if me else status,
        "model_name": info.model_name,
    }


# --- /api/model/* --------------------------------------------------------------------------------


@endpoint("POST")
async def model_create(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name, display_name, connect_status, provider?, model_type?, model_repo?, base_url?,
    api_key_env?, shared?}`` -> ``data: null``."""
    await sync_to_async(model_registry.model_create)(user=user, body=native._json_body(request))
    return ok("Model created successfully", None)


@endpoint("POST")
async def model_update(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name, display_name?, connect_status?, ...}`` -> ``{model_name}``."""
    entry = await sync_to_async(model_registry.model_update)(user=user, body=native._json_body(request))
    return ok("Model updated successfully", {"model_name": entry.model_name})


@endpoint("POST", "DELETE")
async def model_delete(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name}`` -> ``{model_name}``."""
    body = native._json_body(request) if request.body else params(request)
    name = await sync_to_async(model_registry.model_delete)(user=user, model_name=body.get("model_name"))
    return ok("Model deleted successfully", {"model_name": name})


@endpoint("GET")
async def model_list(request: HttpRequest, *, user: User) -> JsonResponse:
    """The user's models, the shared ones, then the providers' own."""
    models = await model_registry.model_list_for_user(user=user)
    return ok("Successfully retrieved model list", [m.as_dict() for m in models])


@endpoint("GET", "POST")
async def model_healthcheck(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name}`` -> ``{status, desc, connect_status}`` after a real call to the provider."""
    body = _body(request)
    info, health = await model_registry.model_healthcheck(
        user=user, model_name=body.get("model_name"), timeout=_timeout(body.get("timeout"))
    )
    return ok("Model health check successful", _health(info, health))


@endpoint("GET", "POST")
async def model_get_connect_status(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name}`` -> ``{model_name, connect_status}`` (the last check's, not a new one)."""
    info = await model_registry.model_get_for_user(user=user, model_name=_body(request).get("model_name"))
    return ok(
        "Successfully retrieved connection status",
        {"model_name": info.model_name, "connect_status": info.connect_status},
    )


@endpoint("POST")
async def model_update_connect_status(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name, connect_status}`` -> the same, as stored."""
    body = native._json_body(request)
    entry = await sync_to_async(model_registry.model_connect_status_set)(
        user=user, model_name=body.get("model_name"), connect_status=body.get("connect_status")
    )
    return ok(
        "Successfully updated connection status",
        {"model_name": entry.model_name, "connect_status": entry.connect_status},
    )


# --- /api/me/*: the providers' own models ----------------------------------------------------------


@endpoint("GET", "POST")
async def me_model_list(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{type?}`` -> ``[{id, name, type, description}]``: the models the configured providers offer."""
    body = _body(request)
    kind = body.get("type") or ""
    if kind and kind not in ("llm", "embedding"):
        raise ValidationFailed("type is llm or embedding.", details={"type": ["llm or embedding."]})
    models = [m for m in await model_registry.provider_models() if not kind or m.model_type == kind]
    data = [
        {
            "id": m.model_id,
            "name": m.model_name,
            "type": m.model_type,
            "description": f"{m.provider}: {m.model_name}",
        }
        for m in models
    ]
    return ok("Successfully retrieved", data)


@endpoint("GET", "POST")
async def me_healthcheck(request: HttpRequest, *, user: User) -> JsonResponse:
    """Whether the configured providers answer: ``AVAILABLE`` when at least one does."""
    _timeout(_body(request).get("timeout"))
    statuses = await provider_statuses()
    reachable = [s["name"] for s in statuses if s["reachable"]]
    if reachable:
        desc = f"Connection successful: {', '.join(reachable)}"
        return ok(
            "Connection successful", {"status": "Connected", "desc": desc, "connect_status": "AVAILABLE"}
        )
    desc = "No configured provider answers."
    return ok("Connection failed", {"status": "Disconnected", "desc": desc, "connect_status": "UNAVAILABLE"})


@endpoint("GET", "POST")
async def me_model_healthcheck(request: HttpRequest, *, user: User) -> JsonResponse:
    """``{model_name}`` -> ``{status, desc, connect_status}`` (``AVAILABLE``/``UNAVAILABLE``)."""
    body = _body(request)
    info, health = await model_registry.model_healthcheck(
        user=user, model_name=body.get("model_name"), timeout=_timeout(body.get("timeout"))
    )
    return ok("Model health check successful", _health(info, health, me=True))


# --- /api/config/* and /api/agent/reload_config -------------------------------------------------


@native.authenticated_endpoint
async def save_config(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``{app, models, data, agents?}`` -> ``{message, status: "saved", notes?}``."""
    methods_allow(request, "POST")
    notes = await sync_to_async(config_transfer.config_import)(user=user, body=native._json_body(request))
    answer: dict[str, Any] = {"message": "Configuration saved successfully", "status": "saved"}
    if notes:
        answer["notes"] = notes
    return JsonResponse(answer)


@native.authenticated_endpoint
async def load_config(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """-> ``{config: {app, models, data, agents}}`` (never a key)."""
    methods_allow(request, "GET")
    return JsonResponse({"config": await sync_to_async(config_transfer.config_export)(user=user)})


@native.authenticated_endpoint
async def reload_config(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """-> ``{status: "success", message, reloaded: [...]}``."""
    methods_allow(request, "POST")
    # staff reload everything; anyone else the shared lists only (a full reload rebuilds the
    # providers, the local model included: not something every user may make the server do)
    reloaded = await sync_to_async(config_reload)(everything=user.is_staff)
    return JsonResponse({"status": "success", "message": "Configuration reloaded", "reloaded": reloaded})
