"""The model registry (SPEC section 10 "Models", docs/dialects.md "Seed 002: models"): the models
each configured provider offers (built in: listed by the providers themselves and by the
operator's presets) plus the ones staff or users added (``ModelEntry`` rows), with health checks.

Who may write (SPEC is silent; Nexus's choice):
- a user adds, changes and deletes models of their own (visible to them only), naming a provider
  and a model; only staff set ``base_url`` or ``api_key_env`` (where the server connects, which
  operator key it sends: SPEC section 12);
- staff add shared models (visible to everyone; a staff member's model is shared unless the body
  says ``"shared": false``) and are the only ones who change or delete shared models;
- the built-in models are the providers': listed and health-checked, never edited.

A health check is a real call through the provider's own code (its resilience layer, the egress
policy and the key binding): a one-token chat completion for an LLM, the provider's model list
for an embedding model. Its result is stored on the row (``connect_status``, ``checked_at``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from agents.models import Agent, ConnectStatus, ModelEntry, ModelType
from agents.provider_config import (
    complete_text,
    generation_options_for,
    provider_preset,
    provider_problem,
    provider_statuses,
)
from core.errors import Forbidden, NotFound, ValidationFailed
from providers.base import ChatMessage, ProviderError
from providers.registry import get_provider

logger = logging.getLogger("nexus.models")

PROVIDER_MODELS_CACHE_KEY = "nexus:model-registry:provider-models"
PROVIDER_MODELS_CACHE_SECONDS = 60
_KEY_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*_API_KEY$")
# Seed 002's clients send the status in English or in Nexent's own (Chinese) words, any case.
CONNECT_STATUS_WORDS = {
    "available": ConnectStatus.AVAILABLE,
    "unavailable": ConnectStatus.UNAVAILABLE,
    "detecting": ConnectStatus.DETECTING,
    "not_detected": ConnectStatus.NOT_DETECTED,
    "not detected": ConnectStatus.NOT_DETECTED,
    "可用": ConnectStatus.AVAILABLE,
    "不可用": ConnectStatus.UNAVAILABLE,
    "检测中": ConnectStatus.DETECTING,
    "未检测": ConnectStatus.NOT_DETECTED,
}
WRITABLE = ("model_name", "display_name", "provider", "model_repo", "model_type", "base_url", "api_key_env")


@dataclass(slots=True)
class ModelInfo:
    """One model of the registry as the faces show it: a row's or a provider's own."""

    model_id: str
    model_name: str
    display_name: str
    provider: str
    model_type: str
    connect_status: str
    model_repo: str = ""
    base_url: str = ""
    api_key_env: str = ""
    builtin: bool = False
    shared: bool = True
    checked_at: datetime | None = None
    detail: str = ""
    entry: ModelEntry | None = field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "model_name": self.model_name,
            "model_repo": self.model_repo,
            "display_name": self.display_name or self.model_name,
            "connect_status": self.connect_status,
            "provider": self.provider,
            "model_type": self.model_type,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "is_builtin": self.builtin,
            "shared": self.shared,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


def model_type_of(name: str) -> str:
    """A provider's model by its name: embedding models say so (``text-embedding-3-small``,
    ``nomic-embed-text``); every other listed model is taken for an LLM."""
    return ModelType.EMBEDDING if "embed" in name.lower() else ModelType.LLM


def model_info_of(entry: ModelEntry) -> ModelInfo:
    return ModelInfo(
        model_id=str(entry.pk),
        model_name=entry.model_name,
        display_name=entry.display_name,
        provider=entry.provider,
        model_type=entry.model_type,
        connect_status=entry.connect_status,
        model_repo=entry.model_repo,
        base_url=entry.base_url,
        api_key_env=entry.api_key_env,
        builtin=False,
        shared=entry.is_shared,
        checked_at=entry.checked_at,
        detail=entry.connect_detail,
        entry=entry,
    )


# --- reads -------------------------------------------------------------------------------------


def model_entries_for_user(*, user: Any) -> QuerySet[ModelEntry]:
    """The user's own models and the shared ones."""
    return ModelEntry.objects.filter(Q(owner=user) | Q(owner__isnull=True)).order_by("model_name", "owner_id")


async def provider_models() -> list[ModelInfo]:
    """The models the configured providers list (asked at most once a minute, shared by every
    process through the cache) and the operator's presets' default models."""
    cached = await cache.aget(PROVIDER_MODELS_CACHE_KEY)
    if cached is None:
        statuses = await provider_statuses()
        cached = [
            {"provider": s["name"], "reachable": s["reachable"], "models": s["models"], "detail": s["detail"]}
            for s in statuses
        ]
        await cache.aset(PROVIDER_MODELS_CACHE_KEY, cached, PROVIDER_MODELS_CACHE_SECONDS)
    found: list[ModelInfo] = []
    for status in cached:
        for name in status["models"]:
            found.append(
                ModelInfo(
                    model_id=f"{status['provider']}:{name}",
                    model_name=name,
                    display_name=name,
                    provider=status["provider"],
                    model_type=model_type_of(name),
                    connect_status=ConnectStatus.AVAILABLE
                    if status["reachable"]
                    else ConnectStatus.UNAVAILABLE,
                    builtin=True,
                )
            )
    for name, preset in sorted(settings.NEXUS_PROVIDER_PRESETS.items()):
        model = preset.get("model", "")
        if model and not any(m.provider == name and m.model_name == model for m in found):
            found.append(
                ModelInfo(
                    model_id=f"{name}:{model}",
                    model_name=model,
                    display_name=model,
                    provider=name,
                    model_type=model_type_of(model),
                    connect_status=ConnectStatus.NOT_DETECTED,
                    builtin=True,
                )
            )
    return found


async def model_list_for_user(*, user: Any, include_builtin: bool = True) -> list[ModelInfo]:
    """The registry as ``user`` sees it: their models and the shared ones, then the providers'."""
    rows = await sync_to_async(lambda: [model_info_of(e) for e in model_entries_for_user(user=user)])()
    builtin = await provider_models() if include_builtin else []
    return [*rows, *builtin]


def model_entry_get_for_user(*, user: Any, model_name: Any) -> ModelEntry:
    """The row called ``model_name`` the user sees: their own before a shared one."""
    name = _name(model_name)
    entry = (
        ModelEntry.objects.filter(model_name=name, owner=user).first()
        or ModelEntry.objects.filter(model_name=name, owner__isnull=True).first()
    )
    if entry is None:
        raise NotFound(f"No model named {name!r}.")
    return entry


async def model_get_for_user(*, user: Any, model_name: Any) -> ModelInfo:
    """A row the user sees, else a provider's model of that name; NotFound."""
    name = _name(model_name)
    try:
        return model_info_of(await sync_to_async(model_entry_get_for_user)(user=user, model_name=name))
    except NotFound:
        pass
    for info in await provider_models():
        if info.model_name == name or info.model_id == name:
            return info
    raise NotFound(f"No model named {name!r}.")


# --- validation --------------------------------------------------------------------------------


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationFailed("model_name is required.", details={"model_name": ["A model name."]})
    name = value.strip()
    if len(name) > 200 or not name.isprintable():
        raise ValidationFailed(
            "Invalid model_name.", details={"model_name": ["At most 200 printable characters."]}
        )
    return name


def connect_status_parse(value: Any) -> str:
    """A connect status from a client's word for it (``AVAILABLE``, ``available``, ``可用``...)."""
    status = CONNECT_STATUS_WORDS.get(value.strip().lower()) if isinstance(value, str) else None
    if status is None:
        raise ValidationFailed(
            "Invalid connect_status.",
            details={"connect_status": ["available, unavailable, detecting or not_detected."]},
        )
    return str(status)


def secrets_refuse(body: dict[str, Any]) -> None:
    """A key in a request is refused: keys live in the environment, named by ``api_key_env``."""
    for name in ("api_key", "apiKey", "api_token", "token", "secret", "password"):
        value = body.get(name)
        if value not in (None, ""):
            raise ValidationFailed(
                "Nexus never stores API keys: the operator puts the key in an environment variable "
                "and the model names that variable (api_key_env).",
                details={name: ["Not stored: name the variable with api_key_env (staff)."]},
            )


def _fields(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    secrets_refuse(body)
    fields: dict[str, Any] = {}
    for key in WRITABLE:
        if key not in body or (partial and body[key] is None):
            continue
        value = body[key]
        if value is None:
            value = ""
        if not isinstance(value, str) or "\x00" in value:
            raise ValidationFailed(f"{key} must be a string (no NUL).", details={key: ["A string."]})
        fields[key] = value.strip()
    if "model_name" in fields:
        fields["model_name"] = _name(fields["model_name"])
    for key in ("display_name", "model_repo"):
        if len(fields.get(key, "")) > 200:
            raise ValidationFailed(f"{key} is too long.", details={key: ["At most 200 characters."]})
    provider = fields.get("provider")
    if provider is not None:
        if not provider:
            raise ValidationFailed("provider is required.", details={"provider": ["A provider name."]})
        if provider_problem(provider) and provider_preset(provider) is None:
            raise ValidationFailed(
                provider_problem(provider) or "", details={"provider": ["Unknown provider."]}
            )
    if "model_type" in fields and fields["model_type"] not in ModelType.values:
        raise ValidationFailed("Invalid model_type.", details={"model_type": ["llm or embedding."]})
    if fields.get("api_key_env") and not _KEY_VARIABLE.match(fields["api_key_env"]):
        raise ValidationFailed(
            "api_key_env names an environment variable ending in _API_KEY.",
            details={"api_key_env": ["A variable name like GROQ_API_KEY (never the key)."]},
        )
    if fields.get("base_url") and not fields["base_url"].startswith(("http://", "https://")):
        raise ValidationFailed("base_url is an http(s) URL.", details={"base_url": ["An http(s) URL."]})
    if "connect_status" in body and body["connect_status"] not in (None, ""):
        fields["connect_status"] = connect_status_parse(body["connect_status"])
    return fields


def _endpoint_check(user: Any, fields: dict[str, Any], entry: ModelEntry | None = None) -> None:
    if getattr(user, "is_staff", False):
        return
    refused = {
        key: [f"Only staff set {key}."]
        for key in ("base_url", "api_key_env")
        if fields.get(key) and fields[key] != (getattr(entry, key) if entry is not None else "")
    }
    if refused:
        raise Forbidden(
            "Only staff set a model's base_url or api_key_env: they decide where the server connects "
            "and which of the operator's keys it sends.",
            details=refused,
        )


def _may_edit(user: Any, entry: ModelEntry) -> None:
    if entry.owner_id is None and not getattr(user, "is_staff", False):
        raise Forbidden("Only staff change shared models.")
    if entry.owner_id is not None and entry.owner_id != user.pk:
        raise NotFound("No such model.")


# --- writes ------------------------------------------------------------------------------------


def model_create(*, user: Any, body: dict[str, Any]) -> ModelEntry:
    """Add a model: a staff member's is shared unless ``"shared": false``; a user's is their own."""
    fields = _fields(body, partial=False)
    if "model_name" not in fields:
        _name(None)
    shared_wanted = body.get("shared")
    staff = bool(getattr(user, "is_staff", False))
    if shared_wanted is not None and not isinstance(shared_wanted, bool):
        raise ValidationFailed("shared is true or false.", details={"shared": ["true or false."]})
    shared = staff if shared_wanted is None else shared_wanted
    if shared and not staff:
        raise Forbidden("Only staff add shared models.")
    _endpoint_check(user, fields)
    fields.setdefault("provider", "openai")
    fields.setdefault("model_type", model_type_of(fields["model_name"]))
    try:
        with transaction.atomic():
            return ModelEntry.objects.create(owner=None if shared else user, created_by=user, **fields)
    except IntegrityError:
        where = "shared" if shared else "of yours"
        raise ValidationFailed(
            f"A {where} model is already called {fields['model_name']!r}.",
            details={"model_name": ["Already in the registry."]},
        ) from None


def model_update(*, user: Any, body: dict[str, Any]) -> ModelEntry:
    """Change the model called ``body.model_name`` (``new_model_name`` renames it)."""
    entry = model_entry_get_for_user(user=user, model_name=body.get("model_name"))
    _may_edit(user, entry)
    fields = _fields({k: v for k, v in body.items() if k != "model_name"}, partial=True)
    if body.get("new_model_name") not in (None, ""):
        fields["model_name"] = _name(body["new_model_name"])
    _endpoint_check(user, fields, entry)
    for key, value in fields.items():
        setattr(entry, key, value)
    try:
        with transaction.atomic():
            entry.save()
    except IntegrityError:
        raise ValidationFailed(
            "Another model already has that name.", details={"model_name": ["Taken."]}
        ) from None
    return entry


def model_delete(*, user: Any, model_name: Any) -> str:
    entry = model_entry_get_for_user(user=user, model_name=model_name)
    _may_edit(user, entry)
    name = entry.model_name
    entry.delete()
    return name


def model_connect_status_set(
    *, user: Any, model_name: Any, connect_status: Any, detail: str = ""
) -> ModelEntry:
    entry = model_entry_get_for_user(user=user, model_name=model_name)
    _may_edit(user, entry)
    entry.connect_status = connect_status_parse(connect_status)
    entry.connect_detail = detail[:300]
    entry.checked_at = timezone.now()
    entry.save(update_fields=["connect_status", "connect_detail", "checked_at", "updated_at"])
    return entry


# --- health --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Health:
    connect_status: str
    detail: str

    @property
    def available(self) -> bool:
        return self.connect_status == ConnectStatus.AVAILABLE


def _probe_agent(info: ModelInfo) -> Agent:
    """An unsaved agent that calls ``info``'s model the way a run would (preset, URL, key)."""
    config: dict[str, Any] = {}
    provider = info.provider
    preset = provider_preset(provider) if provider_problem(provider) else None
    if preset is not None:
        provider = preset.adapter
        config["metadata"] = {"provider_preset": preset.name}
    if info.api_key_env:
        config["api_key_env"] = info.api_key_env
    return Agent(provider=provider, model=info.model_name, base_url=info.base_url, config=config)


async def _check(info: ModelInfo) -> Health:
    agent = _probe_agent(info)
    unknown = provider_problem(agent.provider)
    if unknown:
        return Health(ConnectStatus.UNAVAILABLE, unknown)
    try:
        if info.model_type == ModelType.EMBEDDING:
            options = generation_options_for(agent)
            provider = await asyncio.to_thread(get_provider, agent.provider)
            status = await provider.status(options=options)
            if not status.reachable:
                return Health(
                    ConnectStatus.UNAVAILABLE, getattr(status, "safe_detail", "") or "Not reachable."
                )
            if status.models and info.model_name not in status.models:
                return Health(ConnectStatus.UNAVAILABLE, f"The provider does not list {info.model_name}.")
            return Health(ConnectStatus.AVAILABLE, "Connection successful")
        ping = [ChatMessage(role="user", content="ping")]
        await complete_text(agent=agent, messages=ping, max_tokens=1)
    except ProviderError as exc:
        logger.info("model %s health: %s", info.model_name, exc.message)
        return Health(ConnectStatus.UNAVAILABLE, exc.public_message)
    return Health(ConnectStatus.AVAILABLE, "Connection successful")


async def model_info_check(info: ModelInfo, *, timeout: float | None = None) -> Health:
    """Ask ``info``'s provider (a real, minimal call); a row records the answer."""
    from agents.config_reload import config_reload_if_stale  # it imports this module

    await config_reload_if_stale()
    limit = min(timeout or settings.NEXUS_MODEL_HEALTHCHECK_TIMEOUT, settings.NEXUS_MODEL_HEALTHCHECK_TIMEOUT)
    try:
        health = await asyncio.wait_for(_check(info), limit)
    except TimeoutError:
        health = Health(ConnectStatus.UNAVAILABLE, f"No answer within {limit:g} s.")
    if info.entry is not None:
        entry = info.entry

        def record() -> None:
            ModelEntry.objects.filter(pk=entry.pk).update(
                connect_status=health.connect_status,
                connect_detail=health.detail[:300],
                checked_at=timezone.now(),
            )

        await sync_to_async(record)()
        info.connect_status = health.connect_status
    return health


async def model_healthcheck(
    *, user: Any, model_name: Any, timeout: float | None = None
) -> tuple[ModelInfo, Health]:
    """The model called ``model_name`` that ``user`` sees, checked (``model_info_check``)."""
    info = await model_get_for_user(user=user, model_name=model_name)
    return info, await model_info_check(info, timeout=timeout)


def provider_models_forget() -> None:
    """Drop the cached provider model lists (config reload)."""
    cache.delete(PROVIDER_MODELS_CACHE_KEY)
