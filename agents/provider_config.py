"""Django settings -> providers: the one place that turns settings and agents into provider calls'
options. ``providers/`` reads no settings and no environment; this module hands it what it needs.

- :func:`configure_providers`: process-wide provider settings (Ollama URL, local model, retry cap,
  the egress policy every adapter's HTTP goes through).
- :func:`egress_policy`: the :class:`core.egress.EgressPolicy` of the settings.
- :func:`generation_options_for`: an agent's per-call options, with its API key resolved from the
  environment (``config.api_key_env`` names the variable; never a key in the database) and kept
  only when the agent's URL is a host the key is bound to.
- :func:`provider_statuses`: every registered provider's reachability and models, concurrently,
  each bounded by ``NEXUS_PROVIDER_STATUS_TIMEOUT``; never raises.
- :func:`complete_text`: a whole (short) reply as text, e.g. for conversation titles.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from asgiref.sync import async_to_sync
from django.conf import settings
from django.utils import timezone

from core.egress import DEFAULT_KEY_HOSTS, EgressPolicy, url_host_port
from providers.base import (
    ChatMessage,
    Finished,
    GenerationOptions,
    ProviderError,
    TextDelta,
    Timeouts,
    ToolCall,
)
from providers.registry import get_provider, registry

logger = logging.getLogger("nexus.providers")

# The key variable each provider falls back to when the agent names none.
DEFAULT_KEY_VARIABLES = {"openai": "OPENAI_API_KEY", "gemini": "GOOGLE_API_KEY"}
# Where each adapter goes when neither the agent nor the settings name a URL (the adapters' defaults).
ADAPTER_DEFAULT_URLS = {
    "openai": "https://api.openai.com/v1",
    "gemini": "https://generativelanguage.googleapis.com",
}
# Options that are ours, not the provider's: never passed on as `extra`.
_NOT_PROVIDER_OPTIONS = frozenset({"allowed_models", "api_key_env", "api_version", "metadata", "timeouts"})
TIMEOUT_NAMES = ("connect", "first_token", "between_chunks", "total")

_configured: tuple[Any, ...] | None = None


@dataclass(frozen=True, slots=True)
class ProviderPreset:
    """An OpenAI-compatible service by name (``NEXUS_PROVIDER_PRESETS``): where it is, which
    variable holds its key, and the model a client that names none gets."""

    name: str
    base_url: str
    api_key_env: str = ""
    model: str = ""
    adapter: str = "openai"


def provider_preset(name: str | None) -> ProviderPreset | None:
    """The operator's preset called ``name`` (groq, together...), or None."""
    preset = settings.NEXUS_PROVIDER_PRESETS.get(name or "")
    if preset is None:
        return None
    return ProviderPreset(
        name=str(name),
        base_url=preset["base_url"],
        api_key_env=preset.get("api_key_env", ""),
        model=preset.get("model", ""),
    )


def agent_preset(agent: Any) -> ProviderPreset | None:
    """The preset an agent was made from (``config.metadata.provider_preset``), if it still exists."""
    metadata = (agent.config or {}).get("metadata") or {}
    return provider_preset(metadata.get("provider_preset")) if isinstance(metadata, dict) else None


def _host_entry(url: str) -> str | None:
    """``host:port`` of an http(s) URL (IPv6 in brackets), or None."""
    where = url_host_port(url)
    if where is None:
        return None
    host, port = where
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_policies: dict[tuple[Any, ...], EgressPolicy] = {}


def egress_policy() -> EgressPolicy:
    """The egress policy of the settings (made once per distinct settings).

    Allowed: public addresses, ``NEXUS_EGRESS_ALLOW``, and the host:port of each provider URL the
    operator set (``OLLAMA_BASE_URL``, ``OPENAI_BASE_URL``, ``GEMINI_BASE_URL``). Keys: each
    variable goes to its default host (core.egress.DEFAULT_KEY_HOSTS) and, for the provider's own
    variable, to the host of the operator's URL for that provider; ``NEXUS_KEY_HOSTS`` replaces
    both for a variable it names.
    """
    operator_urls = {
        "OPENAI_API_KEY": settings.OPENAI_BASE_URL,
        "GOOGLE_API_KEY": settings.GEMINI_BASE_URL,
        "GEMINI_API_KEY": settings.GEMINI_BASE_URL,
    }
    keys = settings.NEXUS_PROVIDER_API_KEYS
    identity = (
        tuple(settings.NEXUS_EGRESS_ALLOW),
        tuple(sorted((k, tuple(v)) for k, v in settings.NEXUS_KEY_HOSTS.items())),
        tuple(sorted(keys.items())),
        settings.OLLAMA_BASE_URL,
        tuple(sorted(operator_urls.items())),
        tuple(
            sorted((name, tuple(sorted(p.items()))) for name, p in settings.NEXUS_PROVIDER_PRESETS.items())
        ),
    )
    policy = _policies.get(identity)
    if policy is not None:
        return policy
    implicit = [_host_entry(url) for url in (settings.OLLAMA_BASE_URL, *operator_urls.values()) if url]
    bindings = {name: list(hosts) for name, hosts in DEFAULT_KEY_HOSTS.items()}
    for variable, url in operator_urls.items():
        entry = _host_entry(url) if url else None
        if entry:
            bindings.setdefault(variable, []).append(entry)
    for preset in settings.NEXUS_PROVIDER_PRESETS.values():  # a preset's key goes to its own host
        entry = _host_entry(preset["base_url"])
        if entry and preset.get("api_key_env"):
            bindings.setdefault(preset["api_key_env"], []).append(entry)
    bindings.update(settings.NEXUS_KEY_HOSTS)
    policy = EgressPolicy.build(
        allow=[*settings.NEXUS_EGRESS_ALLOW, *(entry for entry in implicit if entry)],
        key_hosts=bindings,
        keys=keys,
    )
    if len(_policies) > 16:
        _policies.clear()  # settings changed many times (tests): never an unbounded map
    _policies[identity] = policy
    return policy


def _provider_settings() -> dict[str, dict[str, Any]]:
    return {
        "ollama": {"base_url": settings.OLLAMA_BASE_URL},
        "local": {
            "model_path": settings.NEXUS_LOCAL_MODEL_PATH or None,
            "threads": settings.NEXUS_LOCAL_MODEL_THREADS,
        },
        "*": {"retry_after_cap": settings.NEXUS_PROVIDER_RETRY_AFTER_CAP, "egress": egress_policy()},
    }


def configure_providers(*, force: bool = False) -> None:
    """Pass the provider settings to the registry. Idempotent: a second call with the same
    settings does nothing; changed settings (tests, reloads) are passed again."""
    global _configured

    wanted = _provider_settings()
    snapshot = tuple(sorted((name, tuple(sorted(values.items()))) for name, values in wanted.items()))
    if not force and snapshot == _configured:
        return
    for name, values in wanted.items():
        registry.configure(name, **values)
    _configured = snapshot


def _default_base_url(provider: str) -> str | None:
    return {"openai": settings.OPENAI_BASE_URL, "gemini": settings.GEMINI_BASE_URL}.get(provider) or None


def _effective_url(provider: str, base_url: str | None) -> str | None:
    if base_url:
        return base_url
    if provider == "ollama":
        return settings.OLLAMA_BASE_URL
    return ADAPTER_DEFAULT_URLS.get(provider)


def api_key_for(*, provider: str, config: dict[str, Any] | None, base_url: str | None = None) -> str | None:
    """The key for a call: the variable the agent names (``config.api_key_env``), else the
    provider's default variable (OPENAI_API_KEY, GOOGLE_API_KEY). None when unset, and None when
    the call's URL (``base_url``, else the provider's default) is not a host the key is bound to:
    an operator key never leaves for a host the operator did not bind it to (whoever made the
    agent, and whenever: rows saved before the binding existed lose their key here)."""
    keys = settings.NEXUS_PROVIDER_API_KEYS
    variable = (config or {}).get("api_key_env") or DEFAULT_KEY_VARIABLES.get(provider)
    key = keys.get(variable) if variable else None
    if not key:
        return None
    url = _effective_url(provider, base_url)
    if url is None or not egress_policy().key_may_go_to(variable, url):
        where = url_host_port(url) if url else None
        logger.warning(
            "%s is not sent to %s: not a host it is bound to (NEXUS_KEY_HOSTS)",
            variable,
            f"{where[0]}:{where[1]}" if where else "an unknown host",
        )
        return None
    return key


def generation_options_for(agent: Any) -> GenerationOptions:
    """Per-call options for ``agent``: temperature, max_tokens, base_url, the resolved API key and
    the rest of its config as provider-specific ``extra``."""
    configure_providers()
    config = dict(agent.config or {})
    preset = agent_preset(agent)
    base_url = agent.base_url or (preset.base_url if preset else _default_base_url(agent.provider))
    if preset is not None and preset.api_key_env and not config.get("api_key_env"):
        config["api_key_env"] = preset.api_key_env
    return GenerationOptions(
        temperature=agent.temperature,
        max_tokens=agent.max_tokens,
        base_url=base_url,
        api_key=api_key_for(provider=agent.provider, config=config, base_url=base_url),
        api_version=config.get("api_version") or None,
        extra={key: value for key, value in config.items() if key not in _NOT_PROVIDER_OPTIONS},
        timeouts=timeouts_for(config.get("timeouts")),
    )


def timeouts_for(overrides: Any) -> Timeouts:
    """The provider deadlines: the settings, with an agent's ``config.timeouts`` on top (values
    checked when the agent is saved; anything unusable here falls back to the setting). An
    agent's value is clamped to ``NEXUS_MAX_AGENT_TIMEOUT_SECONDS``: one saved before the
    operator lowered the maximum gets the maximum."""
    values = {
        "connect": settings.NEXUS_PROVIDER_CONNECT_TIMEOUT,
        "first_token": settings.NEXUS_PROVIDER_FIRST_TOKEN_TIMEOUT,
        "between_chunks": settings.NEXUS_PROVIDER_CHUNK_TIMEOUT,
        "total": settings.NEXUS_PROVIDER_TOTAL_TIMEOUT,
    }
    if isinstance(overrides, dict):
        for name in TIMEOUT_NAMES:
            value = overrides.get(name)
            if _positive_number(value):
                values[name] = min(float(value), settings.NEXUS_MAX_AGENT_TIMEOUT_SECONDS)
    return Timeouts(**values)


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < float("inf")


def timeout_value_ok(value: Any) -> bool:
    """An agent's timeout may be saved: seconds above 0, at most ``NEXUS_MAX_AGENT_TIMEOUT_SECONDS``."""
    return _positive_number(value) and value <= settings.NEXUS_MAX_AGENT_TIMEOUT_SECONDS


def _default_options(provider: str) -> GenerationOptions:
    base_url = _default_base_url(provider)
    return GenerationOptions(
        base_url=base_url, api_key=api_key_for(provider=provider, config=None, base_url=base_url)
    )


async def _status_of(name: str, timeout: float) -> dict[str, Any]:
    def row(reachable: bool, models: list[str], detail: str, started: float | None) -> dict[str, Any]:
        latency = round((time.perf_counter() - started) * 1000, 1) if started is not None else None
        return {
            "name": name,
            "reachable": reachable,
            "models": models,
            "detail": detail,
            "latency_ms": latency,
        }

    try:
        # The first get() imports the adapter's SDK: off the event loop, and outside the timeout.
        provider = await asyncio.to_thread(get_provider, name)
    except Exception as exc:
        message = exc.message if isinstance(exc, ProviderError) else "Provider could not be loaded."
        return row(False, [], message, None)
    started = time.perf_counter()
    try:
        status = await asyncio.wait_for(provider.status(options=_default_options(name)), timeout)
    except TimeoutError:
        return row(False, [], f"No answer within {timeout:g} s.", started)
    except ProviderError as exc:
        logger.info("provider %s status: %s", name, exc.message)
        return row(False, [], exc.public_message, started)
    except Exception as exc:  # status() should never raise; if it does, it is "unreachable"
        logger.warning("provider %s status failed: %s", name, exc.__class__.__name__)
        return row(False, [], "Status check failed.", started)
    # Shown to every signed-in user: nothing the upstream said, only what its answer means.
    detail = getattr(status, "safe_detail", status.detail) or ""
    if status.detail and status.detail != detail:
        logger.info("provider %s status: %s", name, status.detail)
    return row(bool(status.reachable), [str(model) for model in status.models], detail, started)


async def provider_statuses() -> list[dict[str, Any]]:
    """Every registered provider: ``{name, reachable, models, detail, latency_ms?}``, checked
    concurrently, each within ``NEXUS_PROVIDER_STATUS_TIMEOUT``. Never raises."""
    try:
        configure_providers()
        names = list(registry.names())
    except Exception:
        logger.warning("provider registry unavailable", exc_info=True)
        return []
    timeout = settings.NEXUS_PROVIDER_STATUS_TIMEOUT
    return list(await asyncio.gather(*(_status_of(name, timeout) for name in names)))


async def complete_text(*, agent: Any, messages: Sequence[ChatMessage], max_tokens: int = 32) -> str:
    """Run ``agent``'s provider to the end of one reply and return its text (no tools).

    Raises ProviderError (including a stream that ends without a finish, and a tool call where
    text was expected)."""
    options = replace(generation_options_for(agent), max_tokens=max_tokens)  # configures the registry
    provider = await asyncio.to_thread(get_provider, agent.provider)
    parts: list[str] = []
    stream = provider.stream_chat(model=agent.model, messages=list(messages), tools=(), options=options)
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, ToolCall):
                raise ProviderError("protocol", "The model called a tool where text was expected.")
            elif isinstance(event, Finished):
                return "".join(parts)
    finally:
        await stream.aclose()
    raise ProviderError("incomplete", "The reply ended without a finish.")


# Configure once on first import: the run engine imports this module before its first get_provider().
configure_providers()


# Providers that need a key when they talk to their own hosted service (not to a base URL of the
# agent's or the operator's, e.g. a llama.cpp server speaking OpenAI's API).
_KEY_REQUIRED_AT_DEFAULT_URL = frozenset({"openai", "gemini"})


def provider_problem(provider: str) -> str | None:
    """Why ``provider`` is not a provider of the registry, or None when it is."""
    names = registry.names()
    if provider in names:
        return None
    return f'Unknown provider "{provider}": choose one of {", ".join(names)}.'


def agent_problems(agent: Any) -> list[str]:
    """Why ``agent`` cannot answer now, in words (empty: usable). Checked without the network: an
    unknown provider, a key that is missing (or not bound to the agent's URL), a paused or failing
    agent, a cooldown. The admin's "Test the provider" action asks the provider itself."""
    problems = []
    if agent.status == "paused":
        problems.append("Paused: activate it to let it answer.")
    elif agent.status == "error":
        problems.append('Marked as failing (status "error"): fix it, then activate it.')
    if agent.cooldown_until and agent.cooldown_until > timezone.now():
        problems.append(f"Cooling down until {timezone.localtime(agent.cooldown_until):%Y-%m-%d %H:%M}.")
    unknown = provider_problem(agent.provider)
    if unknown:
        problems.append(unknown)
        return problems
    config = dict(agent.config or {})
    preset = agent_preset(agent)
    if preset is not None and preset.api_key_env and not config.get("api_key_env"):
        config["api_key_env"] = preset.api_key_env
    variable = config.get("api_key_env") or DEFAULT_KEY_VARIABLES.get(agent.provider)
    base_url = agent.base_url or (preset.base_url if preset else _default_base_url(agent.provider))
    named = bool(config.get("api_key_env"))
    needs_key = named or (agent.provider in _KEY_REQUIRED_AT_DEFAULT_URL and not base_url)
    if needs_key and variable and not api_key_for(provider=agent.provider, config=config, base_url=base_url):
        if not settings.NEXUS_PROVIDER_API_KEYS.get(variable):
            problems.append(f"No API key: the variable {variable} is not set on the server.")
        else:
            where = _effective_url(agent.provider, base_url) or "its URL"
            problems.append(f"The key in {variable} is not sent to {where}: not a host it is bound to.")
    return problems


def complete_title(agent: Any, prompt: Sequence[tuple[str, str]]) -> str:
    """Ask ``agent``'s provider for a short completion (a title) of ``prompt`` (role, content)
    pairs, bounded by ``NEXUS_TITLE_TIMEOUT``; from synchronous code (a view's thread)."""
    messages = [ChatMessage(role=role, content=content) for role, content in prompt]

    async def ask() -> str:
        return await asyncio.wait_for(
            complete_text(agent=agent, messages=messages, max_tokens=24), settings.NEXUS_TITLE_TIMEOUT
        )

    return async_to_sync(ask)()
