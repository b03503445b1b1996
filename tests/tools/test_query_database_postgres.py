"""`query_database` on PostgreSQL: the same refusals, enforced by the server (read-only transaction,
statement_timeout, one statement per server-side cursor). The demo tables live in a throwaway schema."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

from agents.demo_data import HOLDINGS, PORTFOLIOS
from agents.tools import ToolOutcome, execute_server_tool
from agents.tools.query_database import QueryLimits, postgres_connect_read_only

pytestmark = pytest.mark.postgres

FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "


@pytest.fixture
def pg_schema(postgres_url: str, settings, make_pg_role) -> Iterator[str]:
    """The demo tables in a fresh schema of the `postgres` database, read by the tool as a role of
    its own that is no superuser but may otherwise do anything to them: what stops the writes
    below is the read-only session, not a missing privilege. Dropped afterwards."""
    schema = f"nexus_tools_test_{uuid.uuid4().hex[:10]}"
    name = sql.Identifier(schema)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(sql.SQL("CREATE SCHEMA {}").format(name))
        db.execute(
            sql.SQL(
                "CREATE TABLE {}.portfolios (id integer PRIMARY KEY, name text NOT NULL, owner text NOT NULL,"
                " cash numeric(12, 2) NOT NULL)"
            ).format(name)
        )
        db.execute(
            sql.SQL(
                "CREATE TABLE {0}.holdings (id integer PRIMARY KEY, portfolio_id integer NOT NULL"
                " REFERENCES {0}.portfolios (id), symbol text NOT NULL, quantity integer NOT NULL,"
                " price double precision NOT NULL)"
            ).format(name)
        )
        db.execute(sql.SQL("CREATE SEQUENCE {}.ticket").format(name))
        with db.cursor() as cursor:
            cursor.executemany(
                sql.SQL("INSERT INTO {}.portfolios VALUES (%s, %s, %s, %s)").format(name), PORTFOLIOS
            )
            cursor.executemany(
                sql.SQL("INSERT INTO {}.holdings VALUES (%s, %s, %s, %s, %s)").format(name), HOLDINGS
            )
    reader_url = make_pg_role()
    reader = sql.Identifier(urlsplit(reader_url).username)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(sql.SQL("GRANT ALL ON SCHEMA {} TO {}").format(name, reader))
        db.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}").format(name, reader))
        db.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}").format(name, reader))
    settings.NEXUS_TOOLS_DATABASE_URL = reader_url
    settings.NEXUS_TOOLS_QUERY_MAX_ROWS = 100
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 2.0
    try:
        yield schema
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as db:
            db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(name))


REFUSED = [
    "INSERT INTO {s}.holdings VALUES (99, 1, 'GME', 1, 1.0)",
    "UPDATE {s}.portfolios SET cash = 0",
    "DELETE FROM {s}.holdings",
    "DROP TABLE {s}.holdings CASCADE",
    "CREATE TABLE {s}.loot (x int)",
    "TRUNCATE {s}.holdings CASCADE",
    "ALTER TABLE {s}.holdings ADD COLUMN note text",
    "WITH gone AS (DELETE FROM {s}.holdings RETURNING id) SELECT * FROM gone",
    "SELECT 1; DROP TABLE {s}.holdings CASCADE",
    "SELECT 1; COMMIT; DROP TABLE {s}.holdings CASCADE",
    "SELECT * FROM {s}.portfolios FOR UPDATE",
    "SELECT nextval('{s}.ticket')",
    "SELECT setval('{s}.ticket', 1000)",
    "LOCK TABLE {s}.holdings IN ACCESS EXCLUSIVE MODE",
    "SET default_transaction_read_only = off",
    "SELECT set_config('transaction_read_only', 'off', true), nextval('{s}.ticket')",
    "CREATE EXTENSION IF NOT EXISTS dblink",
    "COMMIT",
    "COPY (SELECT 1) TO PROGRAM 'touch {scratch}/pwned'",
    "COPY {s}.holdings FROM PROGRAM 'echo 99,1,GME,1,1'",
]


async def query(context, text: str, **extra: object) -> ToolOutcome:
    return await execute_server_tool("query_database", {"sql": text, **extra}, context=context)


def snapshot(postgres_url: str, schema: str) -> tuple[list[tuple], list[tuple], int]:
    name = sql.Identifier(schema)
    with psycopg.connect(postgres_url) as db:
        return (
            db.execute(
                sql.SQL("SELECT id, name, owner, cash FROM {}.portfolios ORDER BY id").format(name)
            ).fetchall(),
            db.execute(sql.SQL("SELECT * FROM {}.holdings ORDER BY id").format(name)).fetchall(),
            db.execute(sql.SQL("SELECT last_value FROM {}.ticket").format(name)).fetchone()[0],
        )


async def test_a_select_answers_with_the_demo_rows(context, pg_schema):
    outcome = await query(
        context,
        f"SELECT p.name, p.cash, h.symbol, h.quantity, h.price FROM {pg_schema}.portfolios p "
        f"JOIN {pg_schema}.holdings h ON h.portfolio_id = p.id ORDER BY p.id, h.id",
    )
    assert not outcome.is_error, outcome.result
    assert outcome.result["columns"] == ["name", "cash", "symbol", "quantity", "price"]
    assert outcome.result["row_count"] == 9
    assert outcome.result["truncated"] is False
    # numeric stays exact: it comes back as a string rather than a rounded float.
    assert outcome.result["rows"][0] == ["Growth", "125000.00", "NVDA", 120, 118.5]
    assert outcome.result["rows"][-1] == ["Balanced", "230250.00", "VTI", 250, 281.6]


@pytest.mark.parametrize("template", REFUSED)
async def test_it_refuses(context, pg_schema, tmp_path, template):
    statement = template.format(s=pg_schema, scratch=tmp_path)
    outcome = await query(context, statement)
    assert outcome.is_error, f"{statement!r} was not refused: {outcome.result}"
    assert "Only one read-only SELECT statement" in outcome.result["error"]
    assert not (tmp_path / "pwned").exists()


async def test_after_every_attempt_the_demo_data_is_unchanged(context, pg_schema, postgres_url, tmp_path):
    before = snapshot(postgres_url, pg_schema)
    assert [row[:3] for row in before[0]] == [row[:3] for row in PORTFOLIOS]
    assert before[1] == HOLDINGS
    for template in REFUSED:
        statement = template.format(s=pg_schema, scratch=tmp_path)
        assert (await query(context, statement)).is_error, statement
    assert snapshot(postgres_url, pg_schema) == before
    assert before[0][0][3] == Decimal("125000.00")


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("SELECT * FROM {s}.portfolios FOR UPDATE", "read-only transaction"),
        ("SELECT nextval('{s}.ticket')", "read-only transaction"),
        ("WITH gone AS (DELETE FROM {s}.holdings RETURNING id) SELECT * FROM gone", "data-modifying"),
        ("SELECT 1; DROP TABLE {s}.holdings", "multiple commands"),
    ],
)
async def test_the_server_gives_the_reason(context, pg_schema, template, reason):
    outcome = await query(context, template.format(s=pg_schema))
    assert reason in outcome.result["error"]


def test_the_session_refuses_writes_even_outside_the_cursor(pg_schema, postgres_url):
    connection = postgres_connect_read_only(postgres_url, limits=QueryLimits(rows=10, seconds=2))
    try:
        assert connection.execute("SHOW statement_timeout").fetchone() == ("2s",)
        # A plain (simple-protocol) execute, no server-side cursor: the transaction still refuses.
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            connection.execute(f"DELETE FROM {pg_schema}.holdings")
        connection.rollback()
        # Once inside the read-only transaction, it cannot be switched to read-write.
        connection.execute("SELECT 1")
        with pytest.raises(psycopg.errors.ActiveSqlTransaction, match="read-write"):
            connection.execute("SELECT set_config('transaction_read_only', 'off', true)")
    finally:
        connection.close()
    assert len(snapshot(postgres_url, pg_schema)[1]) == len(HOLDINGS)


@pytest.mark.parametrize("statement", [FOREVER + "SELECT count(*) FROM c", "SELECT pg_sleep(30)"])
async def test_a_query_that_runs_forever_is_stopped_by_the_time_limit(context, pg_schema, statement):
    started = time.monotonic()
    outcome = await query(context, statement)
    elapsed = time.monotonic() - started
    assert outcome.result == {"error": "The query ran longer than 2 s and was stopped."}
    assert elapsed > 1.5  # not before the time limit (the query never ends by itself)


async def test_a_huge_result_is_cut_to_the_row_limit(context, pg_schema):
    # An endless result: fetching more than the rows shown would have met the time limit.
    outcome = await query(context, FOREVER + "SELECT x, md5(x::text) FROM c")
    assert not outcome.is_error, outcome.result
    assert outcome.result["row_count"] == 100
    assert outcome.result["truncated"] is True
    assert [row[0] for row in outcome.result["rows"]] == list(range(1, 101))


async def test_the_limit_argument_lowers_the_row_limit(context, pg_schema):
    outcome = await query(context, f"SELECT id FROM {pg_schema}.holdings ORDER BY id", limit=2)
    assert outcome.result["rows"] == [[1], [2]]
    assert outcome.result["truncated"] is True


async def test_values_come_back_as_json(context, pg_schema):
    outcome = await query(
        context,
        "SELECT NULL::int, 'NaN'::float8, '\\x00ff'::bytea, repeat('a', 5000), "
        "'2024-01-02 03:04:05+00'::timestamptz, '1 hour'::interval, "
        "'{\"a\": [1, 2]}'::jsonb, ARRAY[1, 2], gen_random_uuid() IS NOT NULL",
    )
    assert not outcome.is_error, outcome.result
    none, nan, blob, long_text, moment, interval, document, array, flag = outcome.result["rows"][0]
    assert (none, nan, blob) == (None, "nan", {"base64": "AP8=", "bytes": 2})
    assert len(long_text) == 2001
    assert moment.startswith("2024-01-02T")
    assert (interval, document, array, flag) == (3600.0, {"a": [1, 2]}, [1, 2], True)


async def test_an_sql_error_comes_back_with_the_servers_reason(context, pg_schema):
    outcome = await query(context, f"SELECT nope FROM {pg_schema}.portfolios")
    assert outcome.result == {"error": 'The database refused the query: column "nope" does not exist'}


async def test_an_unreachable_server_is_an_error_without_its_address(context, settings):
    settings.NEXUS_TOOLS_DATABASE_URL = "postgres://reader:s3cret@127.0.0.1:9/reports"
    outcome = await query(context, "SELECT 1")
    assert outcome.result == {"error": "The tools database is not reachable."}
