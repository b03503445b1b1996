"""Fixtures for the server tools: a run context, the demo data set in a temporary VAR_DIR, a way to
register tools in the process-wide registry that undoes itself after the test, and PostgreSQL
roles of the test's own (query_database refuses a superuser)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

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


def role_url(postgres_url: str, role: str) -> str:
    """``postgres_url`` as ``role`` (the test server trusts loopback connections)."""
    parts = urlsplit(postgres_url)
    host = parts.hostname or "127.0.0.1"
    return urlunsplit(parts._replace(netloc=f"{role}@{host}:{parts.port or 5432}"))


@pytest.fixture
def make_pg_role(postgres_url: str) -> Iterator[Callable[..., str]]:
    """``make_pg_role(*grants)``: a LOGIN role of this test's own, NOSUPERUSER, made a member of
    ``grants`` (role names); its connection URL. Dropped after the test."""
    made: list[str] = []

    def make(*member_of: str) -> str:
        role = f"nexus_tools_role_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER").format(sql.Identifier(role)))
            made.append(role)
            for other in member_of:
                db.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(other), sql.Identifier(role)))
        return role_url(postgres_url, role)

    yield make
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for role in made:
            db.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            db.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
