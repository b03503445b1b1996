"""`query_database` never runs against the application's own database, nor as a PostgreSQL role
that is, may become, or acts like a superuser: it answers with an error result and runs nothing.

The application's database is `settings.DATABASES["default"]`; the SQLite tests and the first
PostgreSQL ones point it at a database of the test's own (the test suite's is in memory); the last
one runs against the suite's real test database when the suite runs on PostgreSQL."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from agents.tools import ToolOutcome, execute_server_tool

APP_DATABASE = "query_database will not run: its database (NEXUS_TOOLS_DATABASE_URL) is the application's own"
SUPERUSER = "query_database will not run: its PostgreSQL role is a superuser"

# Overriding DATABASES warns that Django's connections keep their own copy: the tool reads the setting.
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


async def query(context, text: str) -> ToolOutcome:
    return await execute_server_tool("query_database", {"sql": text}, context=context)


def app_database(settings, **database: object) -> None:
    settings.DATABASES = {**settings.DATABASES, "default": {**settings.DATABASES["default"], **database}}


@pytest.fixture
def app_sqlite(settings, tmp_path: Path) -> Path:
    """The application's database: a SQLite file holding a table an agent must never read."""
    path = tmp_path / "app" / "db.sqlite3"
    path.parent.mkdir()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE auth_user (username text, password text)")
        db.execute("INSERT INTO auth_user VALUES ('admin', 'pbkdf2_sha256$secret')")
    db.close()
    app_database(settings, ENGINE="django.db.backends.sqlite3", NAME=str(path))
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 2.0
    return path


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
async def test_it_refuses_the_applications_sqlite_file(context, settings, app_sqlite, tmp_path, spelling):
    target = {
        "same": app_sqlite,
        "dotted": app_sqlite.parent / ".." / "app" / "db.sqlite3",
        "symlink": tmp_path / "innocent.sqlite3",
    }[spelling]
    if spelling == "symlink":
        target.symlink_to(app_sqlite)
    settings.NEXUS_TOOLS_DATABASE_URL = f"sqlite:///{target}"
    outcome = await query(context, "SELECT username, password FROM auth_user")
    assert outcome.is_error
    assert outcome.result["error"].startswith(APP_DATABASE)
    assert "pbkdf2" not in str(outcome.result)


async def test_another_sqlite_file_is_read_while_the_application_has_its_own(
    context, settings, app_sqlite, demo_database
):
    outcome = await query(context, "SELECT count(*) FROM holdings")
    assert not outcome.is_error, outcome.result
    assert outcome.result["rows"] == [[9]]


# --- PostgreSQL -------------------------------------------------------------------------------


@pytest.fixture
def secret_table(postgres_url: str) -> Iterator[str]:
    """A table in the `postgres` database that the roles below may read."""
    name = f"nexus_tools_guard_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {name}")
        db.execute(f"CREATE TABLE {name} (token text)")
        db.execute(f"INSERT INTO {name} VALUES ('app-secret')")
        db.execute(f"GRANT SELECT ON {name} TO PUBLIC")
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DROP TABLE IF EXISTS {name}")


def pg_app_database(settings, postgres_url: str, *, host: str, name: str | None = None) -> None:
    """The application's database: `postgres_url`'s database (or `name`) on `host`."""
    parts = urlsplit(postgres_url)
    app_database(
        settings,
        ENGINE="django.db.backends.postgresql",
        NAME=name or parts.path.lstrip("/"),
        USER="nexus",
        HOST=host,
        PORT=parts.port or 5432,
    )


@pytest.mark.postgres
@pytest.mark.parametrize(("app_host", "tool_host"), [("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "localhost")])
async def test_it_refuses_the_applications_postgres_database(
    context, settings, postgres_url, make_pg_role, secret_table, app_host, tool_host
):
    pg_app_database(settings, postgres_url, host=app_host)
    reader = urlsplit(make_pg_role())  # a plain role: only the database is wrong
    settings.NEXUS_TOOLS_DATABASE_URL = reader._replace(
        netloc=f"{reader.username}@{tool_host}:{reader.port}"
    ).geturl()
    outcome = await query(context, f"SELECT token FROM {secret_table}")
    assert outcome.is_error
    assert outcome.result["error"].startswith(APP_DATABASE)
    assert "app-secret" not in str(outcome.result)


@pytest.mark.postgres
async def test_a_plain_role_reads_another_database_on_the_same_server(
    context, settings, postgres_url, make_pg_role, secret_table
):
    pg_app_database(settings, postgres_url, host="127.0.0.1", name="nexus_application")
    settings.NEXUS_TOOLS_DATABASE_URL = make_pg_role()
    outcome = await query(context, f"SELECT token FROM {secret_table}")
    assert not outcome.is_error, outcome.result
    assert outcome.result["rows"] == [["app-secret"]]


@pytest.mark.postgres
async def test_it_refuses_a_superuser_role(context, settings, postgres_url, tmp_path):
    settings.NEXUS_TOOLS_DATABASE_URL = postgres_url  # the `postgres` role: a superuser
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 2.0
    # What a superuser could do in a read-only transaction: read the server's files.
    outcome = await query(context, "SELECT pg_read_file('PG_VERSION')")
    assert outcome.is_error
    assert outcome.result["error"].startswith(SUPERUSER)
    assert "rows" not in outcome.result


@pytest.mark.postgres
@pytest.mark.parametrize("member_of", ["postgres", "pg_read_server_files", "pg_execute_server_program"])
async def test_it_refuses_a_role_that_may_act_as_a_superuser(
    context, settings, postgres_url, make_pg_role, member_of
):
    # A member of a superuser role may SET ROLE to it; the pg_*_server_* roles reach the server's files.
    settings.NEXUS_TOOLS_DATABASE_URL = make_pg_role(member_of)
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 2.0
    outcome = await query(context, "SELECT 1")
    assert outcome.is_error
    assert outcome.result["error"].startswith(SUPERUSER)


@pytest.mark.postgres
@pytest.mark.django_db
async def test_it_refuses_the_suites_own_postgres_database(context, settings, make_pg_role):
    app = settings.DATABASES["default"]
    if app["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the suite runs on SQLite (DATABASE_URL=postgres://... runs this one)")
    reader = urlsplit(make_pg_role())
    host = app["HOST"] or "127.0.0.1"
    settings.NEXUS_TOOLS_DATABASE_URL = reader._replace(
        netloc=f"{reader.username}@{host}:{app['PORT'] or 5432}", path=f"/{app['NAME']}"
    ).geturl()
    outcome = await query(context, "SELECT count(*) FROM django_migrations")
    assert outcome.is_error
    assert outcome.result["error"].startswith(APP_DATABASE)
