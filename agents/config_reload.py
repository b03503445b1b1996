"""Reloading the provider and agent configuration a process caches (seed 002's
``POST /api/agent/reload_config``, docs/dialects.md).

What is cached, and dropped here:
- the egress policies built from the settings (``provider_config._policies``);
- the providers' instances (SDK clients, connection pools, a loaded local model): the registry
  is configured afresh and builds each provider again on its next use;
- the server tools' registry (``agents.tools.registry.server_tool_registry``);
- the model registry's list of the providers' models (in the shared cache: every process);
- whatever a module above registers with :func:`config_reload_register` (``/health``'s provider
  statuses).

Runs already streaming keep the provider they hold; the next run gets the new one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agents import provider_config
from agents.model_registry import provider_models_forget
from agents.tools.registry import server_tool_registry

logger = logging.getLogger("nexus.providers")

_reloaders: dict[str, Callable[[], None]] = {}


def config_reload_register(name: str, reload: Callable[[], None]) -> None:
    """Have :func:`config_reload` call ``reload`` too (``name`` is what the answer lists)."""
    _reloaders[name] = reload


def config_reload(*, everything: bool = True) -> list[str]:
    """Drop the cached provider and agent configuration; the names of what was dropped.
    ``everything=False``: only the cheap shared lists (the providers' models, their statuses),
    not the providers themselves."""
    provider_models_forget()
    reloaded = ["provider_models"]
    if everything:
        provider_config._policies.clear()
        provider_config.configure_providers(force=True)
        server_tool_registry.cache_clear()
        reloaded += ["egress_policy", "providers", "server_tools"]
    for name, reload in _reloaders.items():
        reload()
        reloaded.append(name)
    logger.info("configuration reloaded: %s", ", ".join(reloaded))
    return reloaded
