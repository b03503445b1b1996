"""``agents.config_reload``: a reload drops this process's provider instances, and a reload
another process announced (through the shared cache) is picked up before the next run."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache

from agents import config_reload as reload_module
from agents.config_reload import GENERATION_KEY, config_reload, config_reload_if_stale
from providers.registry import get_provider


@pytest.fixture(autouse=True)
def _look_every_time(monkeypatch):
    monkeypatch.setattr(reload_module, "CHECK_SECONDS", 0.0)
    monkeypatch.setitem(reload_module._state, "seen", None)
    monkeypatch.setitem(reload_module._state, "checked", 0.0)
    cache.delete(GENERATION_KEY)
    yield
    cache.delete(GENERATION_KEY)


async def test_an_announced_reload_rebuilds_this_process_providers():
    before = get_provider("ollama")
    assert get_provider("ollama") is before  # instances are cached
    assert await config_reload_if_stale() is False  # nothing announced
    cache.set(GENERATION_KEY, {"at": time.time(), "token": "from-another-process"}, None)
    assert await config_reload_if_stale() is True
    after = get_provider("ollama")
    assert after is not before
    assert await config_reload_if_stale() is False  # acted on once
    assert get_provider("ollama") is after


async def test_an_announcement_older_than_the_process_is_not_a_reload(monkeypatch):
    before = get_provider("ollama")
    monkeypatch.setitem(reload_module._state, "started", time.time())
    cache.set(GENERATION_KEY, {"at": time.time() - 60, "token": "old"}, None)
    assert await config_reload_if_stale() is False
    assert get_provider("ollama") is before


def test_a_full_reload_announces_itself_but_not_to_its_own_process():
    before = get_provider("ollama")
    reloaded = config_reload()
    assert {"providers", "egress_policy", "server_tools", "provider_models"} <= set(reloaded)
    assert get_provider("ollama") is not before
    stamp = cache.get(GENERATION_KEY)
    assert stamp["token"] == reload_module._state["seen"]
    light = config_reload(everything=False)
    assert "providers" not in light and cache.get(GENERATION_KEY) == stamp
