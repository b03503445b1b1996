"""Reloading the provider and agent configuration the processes cache (seed 002's
``POST /api/agent/reload_config``, docs/dialects.md "Seed 002: reload and image proxy").

What is cached, and dropped here:
- the egress policies built from the settings (``provider_config._policies``);
- the providers' instances (SDK clients, connection pools, a loaded local model): the registry
  is configured afresh and builds each provider again on its next use;
- the server tools' registry (``agents.tools.registry.server_tool_registry``);
- the model registry's list of the providers' models (in the shared cache: every process);
- whatever a module above registers with :func:`config_reload_register` (``/health``'s provider
  statuses).

Every process: a full reload also stamps a generation in the shared cache (Redis when
``REDIS_URL`` is set). Each process looks at the stamp before a run asks its provider (at most
every ``CHECK_SECONDS``, :func:`config_reload_if_stale`) and reloads its own caches when another
process stamped it since this one last did. Runs already streaming keep the provider they hold;
the next run gets the new one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache

from agents import provider_config
from agents.model_registry import provider_models_forget
from agents.tools.registry import server_tool_registry

logger = logging.getLogger("nexus.providers")

GENERATION_KEY = "nexus:config-reload"
CHECK_SECONDS = 5.0
CHECK_TIMEOUT = 1.0
_reloaders: dict[str, Callable[[], None]] = {}
# This process: when it started caching (a stamp older than that is nothing to reload), the
# stamp it last acted on, and when it last looked.
_state: dict[str, Any] = {"started": time.time(), "seen": None, "checked": 0.0}


def config_reload_register(name: str, reload: Callable[[], None]) -> None:
    """Have :func:`config_reload` call ``reload`` too (``name`` is what the answer lists)."""
    _reloaders[name] = reload


def _reload_here(*, everything: bool) -> list[str]:
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
    return reloaded


def config_reload(*, everything: bool = True) -> list[str]:
    """Drop the cached provider and agent configuration; the names of what was dropped.
    ``everything=False``: only the cheap shared lists (the providers' models, their statuses),
    not the providers themselves, and no stamp for the other processes."""
    reloaded = _reload_here(everything=everything)
    if everything:
        stamp = {"at": time.time(), "token": f"{time.time_ns()}"}
        try:
            cache.set(GENERATION_KEY, stamp, None)
        except Exception:  # the cache is down: this process reloaded, the others will not know
            logger.warning("configuration reload not announced: the cache is unavailable")
        else:
            _state["seen"] = stamp["token"]
    logger.info("configuration reloaded: %s", ", ".join(reloaded))
    return reloaded


async def config_reload_if_stale() -> bool:
    """Reload this process's caches if another process announced a reload since this one last
    acted on one (or started). Looks at the shared cache at most every ``CHECK_SECONDS``."""
    now = time.monotonic()
    if now - _state["checked"] < CHECK_SECONDS:
        return False
    _state["checked"] = now
    try:
        # never hold a run up for long: a slow or absent cache means "no news"
        stamp = await asyncio.wait_for(cache.aget(GENERATION_KEY), CHECK_TIMEOUT)
    except Exception:
        return False
    if not isinstance(stamp, dict) or stamp.get("token") == _state["seen"]:
        return False
    _state["seen"] = stamp.get("token")
    if float(stamp.get("at") or 0) < _state["started"]:
        return False  # announced before this process began: its caches are younger than that
    await sync_to_async(_reload_here)(everything=True)
    logger.info("configuration reloaded (announced by another process)")
    return True
