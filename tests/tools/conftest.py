"""Fixtures for the server tools: a run context, the demo data set in a temporary VAR_DIR, and a
way to register tools in the process-wide registry that undoes itself after the test."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.demo_data import demo_database_path
from agents.tools import ServerTool, ToolContext, server_tool_registry


@pytest.fixture
def context() -> ToolContext:
    return ToolContext(user_id=7, conversation_id=uuid.uuid4(), agent_id=uuid.uuid4())


@pytest.fixture
def demo_database(settings, tmp_path: Path) -> Path:
    """The default tools database (the demo data set), in a VAR_DIR of this test's own."""
    settings.VAR_DIR = tmp_path
    settings.NEXUS_TOOLS_DATABASE_URL = ""
    settings.NEXUS_TOOLS_QUERY_MAX_ROWS = 100
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 2.0
    return demo_database_path()


@pytest.fixture
def register_tool() -> Iterator[Callable[[ServerTool], ServerTool]]:
    """Register through the same door as the built-ins; unregistered again after the test."""
    registry = server_tool_registry()
    added: list[str] = []

    def register(tool: ServerTool) -> ServerTool:
        registry.register(tool)
        added.append(tool.name)
        return tool

    yield register
    for name in added:
        registry.unregister(name)
