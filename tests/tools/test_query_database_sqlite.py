"""`query_database` on SQLite (the demo data set): real attempts at everything it must refuse.

Each refusal comes from the connection (read-only file, query_only, the authorizer, one
statement per execute, the progress-handler deadline), never from inspecting the SQL text.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from agents.demo_data import HOLDINGS, PORTFOLIOS
from agents.tools import ToolOutcome, execute_server_tool
from agents.tools.query_database import QueryLimits, sqlite_connect_read_only

JOIN = (
    "SELECT p.name, p.owner, h.symbol, h.quantity, h.price FROM portfolios p "
    "JOIN holdings h ON h.portfolio_id = p.id ORDER BY p.id, h.id"
)
FOREVER = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "

REFUSED = [
    "INSERT INTO holdings VALUES (99, 1, 'GME', 1, 1.0)",
    "UPDATE portfolios SET cash = 0",
    "DELETE FROM holdings",
    "REPLACE INTO portfolios VALUES (1, 'Mine', 'mallory', 1e9)",
    "DROP TABLE holdings",
    "CREATE TABLE loot (x)",
    "CREATE TEMP TABLE loot (x)",
    "CREATE VIEW v AS SELECT 1",
    "ALTER TABLE holdings ADD COLUMN note TEXT",
    "WITH gone AS (SELECT id FROM holdings) DELETE FROM holdings WHERE id IN (SELECT id FROM gone)",
    "SELECT 1; DROP TABLE holdings",
    "SELECT * FROM portfolios; DELETE FROM holdings;",
    "PRAGMA query_only = OFF",
    "PRAGMA writable_schema = ON",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA user_version = 7",
    "PRAGMA table_info(holdings)",
    "SELECT * FROM pragma_table_info('holdings')",
    "DETACH DATABASE main",
    "BEGIN IMMEDIATE",
    "VACUUM",
    "REINDEX",
    "ANALYZE",
    "SELECT load_extension('/tmp/evil.so')",
]


async def query(context, sql: str, **extra: object) -> ToolOutcome:
    return await execute_server_tool("query_database", {"sql": sql, **extra}, context=context)


def demo_rows(path: Path) -> tuple[list[tuple], list[tuple], list[str], int]:
    with sqlite3.connect(path) as db:
        return (
            db.execute("SELECT * FROM portfolios ORDER BY id").fetchall(),
            db.execute("SELECT * FROM holdings ORDER BY id").fetchall(),
            [row[0] for row in db.execute("SELECT name FROM sqlite_master ORDER BY name")],
            db.execute("PRAGMA user_version").fetchone()[0],
        )


async def test_a_select_answers_with_the_demo_rows(context, demo_database):
    outcome = await query(context, JOIN)
    assert not outcome.is_error, outcome.result
    assert outcome.result["columns"] == ["name", "owner", "symbol", "quantity", "price"]
    assert outcome.result["row_count"] == len(HOLDINGS) == 9
    assert outcome.result["truncated"] is False
    assert outcome.result["rows"][0] == ["Growth", "alice", "NVDA", 120, 118.5]
    assert outcome.result["rows"][-1] == ["Balanced", "carol", "VTI", 250, 281.6]
    json.dumps(outcome.result, allow_nan=False)


async def test_with_select_and_aggregates_work(context, demo_database):
    outcome = await query(
        context,
        "WITH value AS (SELECT portfolio_id, SUM(quantity * price) AS v FROM holdings GROUP BY portfolio_id) "
        "SELECT p.name, ROUND(v.v, 2) FROM portfolios p JOIN value v ON v.portfolio_id = p.id ORDER BY p.id",
    )
    assert not outcome.is_error, outcome.result
    assert [row[0] for row in outcome.result["rows"]] == ["Growth", "Income", "Balanced"]
    assert outcome.result["rows"][0][1] == round(120 * 118.5 + 60 * 415.2 + 40 * 251.1, 2)


async def test_the_demo_data_set_is_created_on_first_use(context, demo_database):
    assert not demo_database.exists()
    outcome = await query(context, "SELECT COUNT(*) FROM portfolios")
    assert outcome.result["rows"] == [[len(PORTFOLIOS)]]
    assert demo_database.exists()


@pytest.mark.parametrize("sql", REFUSED)
async def test_it_refuses(context, demo_database, sql):
    outcome = await query(context, sql)
    assert outcome.is_error, f"{sql!r} was not refused: {outcome.result}"
    assert "Only one read-only SELECT statement" in outcome.result["error"]


async def test_after_every_attempt_the_demo_data_is_unchanged(context, demo_database, tmp_path):
    await query(context, "SELECT 1")  # creates the data set
    before = demo_rows(demo_database)
    assert before[:2] == (PORTFOLIOS, HOLDINGS)
    for sql in [*REFUSED, f"ATTACH DATABASE '{tmp_path / 'x.db'}' AS x"]:
        assert (await query(context, sql)).is_error, sql
    assert demo_rows(demo_database) == before
    assert before[2] == ["holdings", "portfolios"]


async def test_it_refuses_to_attach_a_database(context, demo_database, tmp_path):
    target = tmp_path / "x.db"
    for sql in [f"ATTACH DATABASE '{target}' AS x", f"ATTACH '{target}' AS x; SELECT 1"]:
        outcome = await query(context, sql)
        assert outcome.is_error
        assert "refused" in outcome.result["error"]
    assert not target.exists()


async def test_the_connection_refuses_writes_even_without_the_authorizer(demo_database, context):
    await query(context, "SELECT 1")  # creates the data set
    connection = sqlite_connect_read_only(demo_database, limits=QueryLimits(rows=10, seconds=2))
    try:
        connection.set_authorizer(None)  # peel off one layer: the others still hold
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("DELETE FROM holdings")
        connection.execute("PRAGMA query_only = OFF")  # mode=ro still holds the file shut
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            connection.execute("DELETE FROM holdings")
        with pytest.raises(sqlite3.OperationalError, match="too many attached"):
            connection.execute(f"ATTACH DATABASE '{demo_database.parent / 'y.db'}' AS y")
    finally:
        connection.close()
    assert demo_rows(demo_database)[1] == HOLDINGS


async def test_a_query_that_runs_forever_is_stopped_by_the_time_limit(context, demo_database):
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    outcome = await query(context, FOREVER + "SELECT COUNT(*) FROM c")
    elapsed = time.monotonic() - started
    ticker.cancel()
    assert outcome.is_error
    assert outcome.result["error"] == "The query ran longer than 2 s and was stopped."
    assert elapsed > 1.5  # not before the time limit (the query never ends by itself)
    # The query ran in a thread: the event loop kept serving everyone else meanwhile.
    assert ticks >= 20


async def test_the_time_limit_is_a_setting(context, demo_database, settings):
    settings.NEXUS_TOOLS_QUERY_TIMEOUT = 0.3
    started = time.monotonic()
    outcome = await query(context, FOREVER + "SELECT MAX(x) FROM c")
    assert outcome.result == {"error": "The query ran longer than 0.3 s and was stopped."}
    assert time.monotonic() - started < 1.5


async def test_a_huge_result_is_cut_to_the_row_limit(context, demo_database):
    outcome = await query(context, FOREVER + "SELECT x FROM c")
    assert not outcome.is_error, outcome.result  # reading on would have met the time limit
    assert outcome.result["rows"] == [[n] for n in range(1, 101)]
    assert outcome.result["row_count"] == 100
    assert outcome.result["truncated"] is True


async def test_the_limit_argument_lowers_but_never_raises_the_row_limit(context, demo_database, settings):
    fewer = await query(context, "SELECT id FROM holdings ORDER BY id", limit=4)
    assert fewer.result["rows"] == [[1], [2], [3], [4]]
    assert fewer.result["truncated"] is True
    exact = await query(context, "SELECT id FROM holdings", limit=9)
    assert (exact.result["row_count"], exact.result["truncated"]) == (9, False)
    settings.NEXUS_TOOLS_QUERY_MAX_ROWS = 3
    capped = await query(context, "SELECT id FROM holdings ORDER BY id", limit=50)
    assert capped.result["rows"] == [[1], [2], [3]]
    assert capped.result["truncated"] is True


async def test_values_come_back_as_json(context, demo_database):
    outcome = await query(context, "SELECT NULL, 1e999, x'00ff', printf('%.5000c', 'a'), 0.5")
    assert not outcome.is_error, outcome.result
    none, infinite, blob, long_text, half = outcome.result["rows"][0]
    assert none is None
    assert infinite == "inf"
    assert blob == {"base64": "AP8=", "bytes": 2}
    assert len(long_text) == 2001 and long_text.endswith("…")
    assert half == 0.5
    json.dumps(outcome.result, allow_nan=False)


async def test_a_value_too_large_to_build_is_refused(context, demo_database):
    outcome = await query(context, "SELECT randomblob(50000000)")
    assert outcome.is_error
    assert "too big" in outcome.result["error"]


async def test_an_sql_error_comes_back_with_the_databases_reason(context, demo_database):
    outcome = await query(context, "SELECT nope FROM portfolios")
    assert outcome.result == {"error": "The database refused the query: no such column: nope"}


async def test_a_configured_sqlite_url_is_used(context, demo_database, settings, tmp_path):
    await query(context, "SELECT 1")  # creates the demo data set
    copy = tmp_path / "copy" / "reports.sqlite3"
    copy.parent.mkdir()
    shutil.copy(demo_database, copy)
    with sqlite3.connect(copy) as db:
        db.execute("UPDATE portfolios SET name = 'Copied' WHERE id = 1")
    settings.NEXUS_TOOLS_DATABASE_URL = f"sqlite:///{copy}"
    outcome = await query(context, "SELECT name FROM portfolios WHERE id = 1")
    assert outcome.result["rows"] == [["Copied"]]


async def test_a_missing_configured_file_is_an_error_and_is_not_created(context, settings, tmp_path):
    missing = tmp_path / "missing.sqlite3"
    settings.NEXUS_TOOLS_DATABASE_URL = f"sqlite:///{missing}"
    outcome = await query(context, "SELECT 1")
    assert outcome.result == {"error": "The tools database cannot be opened."}
    assert not missing.exists()
