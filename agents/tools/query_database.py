"""`query_database`: one read-only SELECT against the tools database, with a row and a time limit.

The database connection itself enforces every rule; nothing here parses the SQL.

SQLite (the demo data set, or a ``sqlite:///`` URL):
  - the file is opened ``mode=ro``, and ``PRAGMA query_only`` is on: no write reaches the file;
  - an authorizer allows only what a SELECT needs (select, read, functions, recursive CTEs), so
    ATTACH, PRAGMA, temp tables and every write are refused while the statement is compiled;
  - ``Connection.execute`` refuses a second statement, and ``SQLITE_LIMIT_ATTACHED`` is 0;
  - a progress handler aborts the statement at the deadline.
PostgreSQL (a ``postgres://`` URL):
  - the session starts with ``default_transaction_read_only``, ``statement_timeout`` and
    ``lock_timeout``, and the transaction is ``BEGIN READ ONLY``;
  - the SQL runs as a server-side cursor (``DECLARE ... CURSOR FOR <sql>`` over the extended
    protocol): the server accepts exactly one SELECT/VALUES there, refuses a second statement
    and refuses data-modifying WITH clauses; rows are fetched only up to the limit.
Use a PostgreSQL role that can only SELECT what the agents may read: read-only transactions
still allow reading anything the role can read.

The tool refuses to run at all (an error result, and an error in the log) against the
application's own database (the same SQLite file, or the same PostgreSQL host, port and database)
and as a PostgreSQL superuser, or a role that may become one or read the server's files: a
superuser reads any file of the server (``pg_read_file``) even in a read-only transaction.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import time as clock_time
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import dj_database_url
import psycopg
from django.conf import settings
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from agents.demo_data import demo_data_ensure, demo_database_path
from agents.tools.base import ToolContext, ToolError, ToolOutcome

logger = logging.getLogger(__name__)

# A cell longer than this is cut: results go into the model's context, which is small.
MAX_CELL_CHARS = 2_000
# SQLite refuses to build any string or blob longer than this (randomblob(1e9) and friends).
_SQLITE_MAX_VALUE_BYTES = 1_000_000
# SQLite calls the progress handler every this many virtual-machine steps.
_SQLITE_PROGRESS_STEPS = 1_000
_ONLY_SELECT = "Only one read-only SELECT statement (WITH ... SELECT allowed) may run"

_SQLITE_ALLOWED_ACTIONS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
_SQLITE_DENIED_FUNCTIONS = frozenset({"load_extension"})
_demo_lock = threading.Lock()

_APP_DATABASE_REFUSAL = (
    "query_database will not run: its database (NEXUS_TOOLS_DATABASE_URL) is the application's own "
    "database. Point it at a database of its own."
)
_SUPERUSER_REFUSAL = (
    "query_database will not run: its PostgreSQL role is a superuser, may become one, or may read "
    "the server's files. Give it a role that can only SELECT what agents may read."
)
# Roles whose members may read or write the server's files or run programs there.
_PG_FILE_ROLES = ("pg_read_server_files", "pg_write_server_files", "pg_execute_server_program")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryLimits:
    rows: int
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "rows": self.rows,
            "row_count": len(self.rows),
            "truncated": self.truncated,
        }


def _timeout_error(limits: QueryLimits) -> ToolError:
    return ToolError(f"The query ran longer than {limits.seconds:g} s and was stopped.")


def _json_value(value: Any) -> Any:
    """One database value as JSON; exact types (Decimal) become strings rather than lose digits."""
    match value:
        case None | bool() | int():
            return value
        case float():
            return value if math.isfinite(value) else str(value)
        case str():
            return value if len(value) <= MAX_CELL_CHARS else value[:MAX_CELL_CHARS] + "…"
        case bytes() | bytearray() | memoryview():
            raw = bytes(value[: MAX_CELL_CHARS // 2])
            return {"base64": base64.b64encode(raw).decode("ascii"), "bytes": len(value)}
        case datetime() | date() | clock_time():
            return value.isoformat()
        case timedelta():
            return value.total_seconds()
        case Decimal() | uuid.UUID():
            return str(value)
        case list() | tuple():
            return [_json_value(item) for item in value]
        case dict():
            return {str(key): _json_value(item) for key, item in value.items()}
        case _:
            return _json_value(str(value))


def _result(columns: list[str], rows: list[Any], limits: QueryLimits) -> QueryResult:
    return QueryResult(
        columns=columns,
        rows=[[_json_value(value) for value in row] for row in rows[: limits.rows]],
        truncated=len(rows) > limits.rows,
    )


# --- SQLite -----------------------------------------------------------------------------------


def _sqlite_authorize(
    action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
) -> int:
    if action == sqlite3.SQLITE_FUNCTION:
        # For functions, arg2 is the function's name.
        return sqlite3.SQLITE_DENY if (arg2 or "").lower() in _SQLITE_DENIED_FUNCTIONS else sqlite3.SQLITE_OK
    return sqlite3.SQLITE_OK if action in _SQLITE_ALLOWED_ACTIONS else sqlite3.SQLITE_DENY


def sqlite_connect_read_only(path: Path, *, limits: QueryLimits) -> sqlite3.Connection:
    """A connection to ``path`` that can run nothing but one SELECT, within ``limits.seconds``."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    # isolation_level=None: Python never issues BEGIN on our behalf (the authorizer would refuse it).
    connection = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=limits.seconds)
    try:
        connection.execute("PRAGMA query_only = ON")
        connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, _SQLITE_MAX_VALUE_BYTES)
        # Last: from here on PRAGMA is refused too, including one that would undo the above.
        connection.set_authorizer(_sqlite_authorize)
    except BaseException:
        connection.close()
        raise
    return connection


def _sqlite_error(exc: sqlite3.Error, limits: QueryLimits) -> ToolError:
    code = getattr(exc, "sqlite_errorname", "")
    if code == "SQLITE_INTERRUPT":
        return _timeout_error(limits)
    message = str(exc).rstrip(".")
    refused = (
        code == "SQLITE_AUTH"
        or code.startswith("SQLITE_READONLY")
        # The authorizer's refusal of a table-valued PRAGMA or a denied function comes as SQLITE_ERROR.
        or message.startswith("not authorized")
        or (isinstance(exc, sqlite3.ProgrammingError) and "one statement" in message)
    )
    if refused:
        return ToolError(f"The database refused the query ({message}). {_ONLY_SELECT}.")
    return ToolError(f"The database refused the query: {message}")


def sqlite_query(path: Path, sql: str, *, limits: QueryLimits) -> QueryResult:
    """Run ``sql`` on the SQLite file at ``path`` through a read-only connection (blocking)."""
    try:
        connection = sqlite_connect_read_only(path, limits=limits)
    except sqlite3.Error:
        logger.exception("query_database cannot open %s", path)
        raise ToolError("The tools database cannot be opened.") from None
    try:
        deadline = time.monotonic() + limits.seconds
        connection.set_progress_handler(lambda: time.monotonic() > deadline, _SQLITE_PROGRESS_STEPS)
        cursor = connection.execute(sql)
        if cursor.description is None:
            raise ToolError(f"The statement is not a query: it returned no rows. {_ONLY_SELECT}.")
        # One row past the limit says whether the result was cut, without reading the rest.
        rows = cursor.fetchmany(limits.rows + 1)
        columns = [column[0] for column in cursor.description]
    except sqlite3.Error as exc:
        raise _sqlite_error(exc, limits) from None
    finally:
        connection.close()
    return _result(columns, rows, limits)


# --- PostgreSQL -------------------------------------------------------------------------------

# SQLSTATEs (or classes) that mean "not a single read-only SELECT": 25 invalid transaction state
# (read-only transaction, switching it off), 42501 insufficient privilege, 42601 syntax error (a
# non-SELECT inside DECLARE, several statements), 0A000 feature not supported (data-modifying WITH).
_PG_REFUSALS = ("25", "42501", "42601", "0A000")


def _postgres_error(exc: psycopg.Error, limits: QueryLimits) -> ToolError:
    if isinstance(exc, pg_errors.QueryCanceled | pg_errors.LockNotAvailable):
        return _timeout_error(limits)
    sqlstate = exc.sqlstate or ""
    message = exc.diag.message_primary if sqlstate else None
    if not message:
        logger.warning("query_database lost its PostgreSQL connection: %s", exc)
        return ToolError("The tools database connection failed.")
    if sqlstate.startswith(_PG_REFUSALS):
        return ToolError(f"The database refused the query ({message}). {_ONLY_SELECT}.")
    return ToolError(f"The database refused the query: {message}")


def postgres_connect_read_only(url: str, *, limits: QueryLimits) -> psycopg.Connection[Any]:
    """A session whose every transaction is read-only and whose statements stop at ``limits.seconds``."""
    milliseconds = max(1, round(limits.seconds * 1000))
    guard = (
        f"-c default_transaction_read_only=on -c statement_timeout={milliseconds} "
        f"-c lock_timeout={milliseconds} -c idle_in_transaction_session_timeout={milliseconds * 5}"
    )
    # Ours come last, so they win over any options the URL already carries.
    options = f"{conninfo_to_dict(url).get('options', '')} {guard}".strip()
    connection = psycopg.connect(
        url, options=options, connect_timeout=max(2, math.ceil(limits.seconds)), autocommit=False
    )
    # BEGIN READ ONLY as well: the transaction does not depend on the session default alone.
    connection.read_only = True
    return connection


def postgres_query(url: str, sql: str, *, limits: QueryLimits) -> QueryResult:
    """Run ``sql`` on PostgreSQL in a read-only transaction through a server-side cursor (blocking)."""
    try:
        connection = postgres_connect_read_only(url, limits=limits)
    except psycopg.Error as exc:
        # The exception text can name the host and user: it goes to the log only.
        logger.warning("query_database cannot connect to PostgreSQL: %s", exc)
        raise ToolError("The tools database is not reachable.") from None
    try:
        _postgres_refuse_unsafe_session(connection)
        # DECLARE ... CURSOR FOR <sql>, sent over the extended protocol: exactly one SELECT.
        cursor = connection.cursor(name=f"nexus_query_{uuid.uuid4().hex[:12]}")
        cursor.execute(sql)
        rows = cursor.fetchmany(limits.rows + 1)
        columns = [column.name for column in cursor.description or ()]
    except psycopg.Error as exc:
        raise _postgres_error(exc, limits) from None
    finally:
        # Closing without COMMIT discards the transaction and the cursor with it.
        connection.close()
    return _result(columns, rows, limits)


# --- Never the application's database, never a superuser --------------------------------------


def _app_database() -> dict[str, Any]:
    return settings.DATABASES["default"]


def _sqlite_file(name: str) -> Path | None:
    """The file behind a SQLite database name; None for an in-memory database."""
    if not name or name == ":memory:":
        return None
    if name.startswith("file:"):
        parts = urlsplit(name)
        if "mode=memory" in parts.query or not parts.path:
            return None
        name = parts.path
    return Path(name)


def is_app_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is the application's own SQLite database file."""
    app = _app_database()
    # Django's own SQLite engine, or Nexus's (core.sqlite_backend, the default for sqlite URLs)
    if app.get("ENGINE") not in {"django.db.backends.sqlite3", "core.sqlite_backend"}:
        return False
    app_file = _sqlite_file(str(app.get("NAME") or ""))
    if app_file is None:
        return False
    try:
        if app_file.resolve() == path.resolve():
            return True
        return os.path.samefile(app_file, path)
    except OSError:  # either file missing: not the same file
        return False


_LOCAL = frozenset({"127.0.0.1", "::1", "localhost", "unix-socket"})


def _addresses(host: str) -> set[str]:
    """What ``host`` may reach: its name and resolved addresses; a Unix socket counts as loopback."""
    host = host.strip().lower().strip("[]")
    if not host or host.startswith("/") or host == "localhost":
        return set(_LOCAL)
    found = {host}
    try:
        found |= {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        pass
    return found | (set(_LOCAL) if found & _LOCAL else set())


def _postgres_endpoints(host: str, port: str) -> list[tuple[str, int]]:
    hosts = (host or "").split(",")
    ports = [(p or "").strip() for p in str(port or "").split(",")]
    if len(ports) == 1:
        ports = ports * len(hosts)
    endpoints = []
    for h, p in zip(hosts, ports, strict=False):
        try:
            endpoints.append((h, int(p or 5432)))
        except ValueError:
            endpoints.append((h, 5432))
    return endpoints


def is_app_postgres_database(url: str) -> bool:
    """Whether ``url`` names the application's own PostgreSQL database: the same database name on
    the same port of a host that resolves to any of the application's database addresses."""
    app = _app_database()
    if app.get("ENGINE") != "django.db.backends.postgresql":
        return False
    target = conninfo_to_dict(url)
    dbname = target.get("dbname") or target.get("user") or ""
    if dbname != app.get("NAME"):
        return False
    app_endpoints = [
        (_addresses(h), p) for h, p in _postgres_endpoints(app.get("HOST") or "", app.get("PORT"))
    ]
    for host, port in _postgres_endpoints(target.get("host") or "", target.get("port") or ""):
        addresses = _addresses(host)
        if any(port == app_port and addresses & app_addresses for app_addresses, app_port in app_endpoints):
            return True
    return False


def _postgres_refuse_unsafe_session(connection: psycopg.Connection[Any]) -> None:
    """Once connected: refuse a superuser role (or one that may SET ROLE to a superuser or read
    the server's files), and the application's database reached under another name."""
    row = connection.execute(
        "SELECT current_setting('is_superuser') = 'on'"
        " OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolsuper AND pg_has_role(current_user, r.oid, 'MEMBER'))"
        " OR EXISTS (SELECT 1 FROM pg_roles r WHERE r.rolname = ANY(%s) AND pg_has_role(current_user, r.oid, 'MEMBER')),"
        " current_database(), host(inet_server_addr()), inet_server_port()",
        [list(_PG_FILE_ROLES)],
    ).fetchone()
    connection.rollback()
    unsafe_role, dbname, server_address, server_port = row
    if unsafe_role:
        logger.error("query_database refused: its PostgreSQL role is a superuser or may act as one")
        raise ToolError(_SUPERUSER_REFUSAL)
    app = _app_database()
    if app.get("ENGINE") == "django.db.backends.postgresql" and dbname == app.get("NAME"):
        address = server_address or "unix-socket"
        for app_host, app_port in _postgres_endpoints(app.get("HOST") or "", app.get("PORT")):
            if server_port in (app_port, None) and address in _addresses(app_host):
                logger.error("query_database refused: its database is the application's own database")
                raise ToolError(_APP_DATABASE_REFUSAL)


def refuse_app_database(kind: Literal["sqlite", "postgres"], target: str) -> None:
    """Raise ToolError if the tools database is the application's own (before connecting)."""
    same = is_app_sqlite_file(Path(target)) if kind == "sqlite" else is_app_postgres_database(target)
    if same:
        logger.error("query_database refused: its database is the application's own database")
        raise ToolError(_APP_DATABASE_REFUSAL)


# --- The tool ---------------------------------------------------------------------------------


def tools_database() -> tuple[Literal["sqlite", "postgres"], str]:
    """Where the tool reads: ("sqlite", file path) or ("postgres", URL). Creates the demo data
    set on first use when no URL is configured (blocking)."""
    url = settings.NEXUS_TOOLS_DATABASE_URL
    if url.startswith(("postgres://", "postgresql://")):
        return "postgres", url
    if url:
        return "sqlite", dj_database_url.parse(url)["NAME"]

    path = demo_database_path()
    if not path.exists():
        with _demo_lock:
            if not path.exists():
                demo_data_ensure()
    return "sqlite", str(path)


def _query_blocking(sql: str, limits: QueryLimits) -> QueryResult:
    kind, target = tools_database()
    refuse_app_database(kind, target)
    if kind == "postgres":
        return postgres_query(target, sql, limits=limits)
    return sqlite_query(Path(target), sql, limits=limits)


class QueryDatabaseTool:
    name = "query_database"
    description = (
        "Run one read-only SQL SELECT (WITH ... SELECT allowed) against the configured database and "
        "get columns and rows back. Writes, several statements, PRAGMA and ATTACH are refused; long "
        "queries are stopped and long results are cut to a row limit (`truncated` says so). The demo "
        "data set has tables portfolios(id, name, owner, cash) and holdings(id, portfolio_id, symbol, "
        "quantity, price). List tables with SELECT name, sql FROM sqlite_master (SQLite) or from "
        "information_schema.columns (PostgreSQL)."
    )
    parameters = {
        "type": "object",
        "properties": {
            "sql": {
                "type": "string",
                "minLength": 1,
                "maxLength": 20_000,
                "description": "One SELECT statement, e.g. SELECT name, cash FROM portfolios.",
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": 10_000,
                "description": "Return at most this many rows (the server's row limit still applies).",
            },
        },
        "required": ["sql"],
        "additionalProperties": False,
    }

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        """Columns, rows (at most the row limit), row_count and truncated."""
        ceiling = int(settings.NEXUS_TOOLS_QUERY_MAX_ROWS)
        limits = QueryLimits(
            rows=min(int(arguments.get("limit") or ceiling), ceiling),
            seconds=float(settings.NEXUS_TOOLS_QUERY_TIMEOUT),
        )
        # sqlite3 and psycopg block: a thread keeps the event loop (and every socket) responsive.
        result = await asyncio.to_thread(_query_blocking, arguments["sql"], limits)
        return ToolOutcome(result=result.as_json())
