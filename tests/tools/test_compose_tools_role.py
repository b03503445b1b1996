"""docker-compose.yml gives `query_database` a database and a role of its own: the init script
(docker/postgres/) runs here against the machine's PostgreSQL, under names of the test's own,
and the tool reads the demo rows through it; the role is no superuser and cannot write."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml
from psycopg import sql

from agents.demo_data import HOLDINGS, PORTFOLIOS
from agents.tools import execute_server_tool
from tests.procs import ROOT

INIT_DIR = ROOT / "docker" / "postgres"
SCRIPT = INIT_DIR / "20-tools-database.sh"
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _interpolated(value: str) -> str:
    """A compose value with every ${VARIABLE...} replaced, as `docker compose` would."""
    return re.sub(r"\$\{[^}]*\}", "value", value)


def test_compose_mounts_the_init_script_and_points_the_tool_at_its_role():
    postgres = COMPOSE["services"]["postgres"]
    assert f"./{INIT_DIR.relative_to(ROOT)}:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert "NEXUS_TOOLS_DB_PASSWORD" in postgres["environment"]
    assert os.access(SCRIPT, os.X_OK)  # the image runs executable *.sh files (others are sourced)
    for name in ("web", "worker"):
        env = COMPOSE["services"][name]["environment"]
        url = urlsplit(_interpolated(env["NEXUS_TOOLS_DATABASE_URL"]))
        app = urlsplit(_interpolated(env["DATABASE_URL"]))
        assert url.username == "nexus_tools_reader" != app.username
        assert url.path == "/nexus_demo" != app.path
        assert url.hostname == "postgres"


@pytest.fixture
def tools_database(postgres_url: str) -> Iterator[str]:
    """The init script's database and role, under names of this test's own; the role's URL."""
    if shutil.which("psql") is None:
        pytest.skip("psql is not installed")
    suffix = uuid.uuid4().hex[:10]
    database, role = f"nexus_demo_{suffix}", f"nexus_tools_reader_{suffix}"
    parts = urlsplit(postgres_url)
    env = {
        **os.environ,
        "PGHOST": parts.hostname or "127.0.0.1",
        "PGPORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "postgres",
        "NEXUS_TOOLS_DB_PASSWORD": "reader-password",
        "NEXUS_TOOLS_DB_NAME": database,
        "NEXUS_TOOLS_DB_USER": role,
    }
    try:
        done = subprocess.run(["sh", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        yield f"postgres://{role}:reader-password@{env['PGHOST']}:{env['PGPORT']}/{database}"
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.mark.postgres
async def test_the_tool_reads_the_demo_rows_as_the_compose_role(context, settings, tools_database):
    settings.NEXUS_TOOLS_DATABASE_URL = tools_database
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 2.0
    outcome = await execute_server_tool(
        "query_database", {"sql": "SELECT id, name, owner, cash FROM portfolios ORDER BY id"}, context=context
    )
    assert not outcome.is_error, outcome.result
    assert outcome.result["rows"] == [[i, n, o, f"{c:.2f}"] for i, n, o, c in PORTFOLIOS]
    outcome = await execute_server_tool(
        "query_database", {"sql": "SELECT * FROM holdings ORDER BY id"}, context=context
    )
    assert outcome.result["rows"] == [list(row) for row in HOLDINGS]


@pytest.mark.postgres
def test_the_compose_role_is_no_superuser_and_cannot_write(tools_database):
    with psycopg.connect(tools_database, autocommit=True) as db:
        assert db.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        assert db.execute("SELECT sum(cash) FROM portfolios").fetchone() == (Decimal("435750.00"),)
        # Even outside the tool's read-only session: no privilege to write, nor to create.
        db.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("DELETE FROM holdings")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("CREATE TABLE loot (x int)")
