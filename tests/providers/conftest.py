"""Fixtures for provider tests: loopback fake servers and the adapters pointed at them.

``remote`` runs a test once per remote adapter (openai, gemini, ollama) with the matching fake
server, so every behaviour of the resilience contract is checked for each of them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes import FakeGemini, FakeOllama, FakeOpenAI
from tests.providers.helpers import ADAPTERS, Remote


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    with FakeGemini() as server:
        yield server


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


@pytest.fixture(params=sorted(ADAPTERS))
def remote(request: pytest.FixtureRequest) -> Iterator[Remote]:
    """Each remote adapter in turn, with a fresh fake server of its dialect."""
    factory, server_cls, model = ADAPTERS[request.param]
    with server_cls() as server:
        yield Remote(request.param, server, factory(), model, factory)
