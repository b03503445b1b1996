"""Nexus's SQLite engine: Django's, on a SQLite that can load extensions, with sqlite-vec loaded.

The Python of many systems is built without ``enable_load_extension``; ``pysqlite3-binary``
bundles a recent SQLite (with FTS5) that can load them. This engine is Django's SQLite engine
on that module, with the converters and adapters Django registers on the standard module
registered on it too, and sqlite-vec loaded into each new connection (``sqlite_vec_version`` on
the wrapper says it is there). Without pysqlite3 it runs on the standard module; where
sqlite-vec cannot load, knowledge search scans vectors with numpy (``knowledge.index``).
"""

from __future__ import annotations

import datetime
import decimal
import logging
from collections.abc import Mapping
from itertools import tee
from typing import Any

from django.db.backends.sqlite3 import base as django_sqlite
from django.db.backends.sqlite3._functions import (  # type: ignore[import-untyped]  # no stubs
    register as register_functions,
)
from django.utils.asyncio import async_unsafe
from django.utils.dateparse import parse_date, parse_datetime, parse_time

try:
    from pysqlite3 import dbapi2 as Database  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - the pinned requirements install it
    from sqlite3 import dbapi2 as Database

logger = logging.getLogger(__name__)

Database.register_converter("bool", b"1".__eq__)
Database.register_converter("date", django_sqlite.decoder(parse_date))
Database.register_converter("time", django_sqlite.decoder(parse_time))
Database.register_converter("datetime", django_sqlite.decoder(parse_datetime))
Database.register_converter("timestamp", django_sqlite.decoder(parse_datetime))
Database.register_adapter(decimal.Decimal, str)
Database.register_adapter(datetime.date, django_sqlite.adapt_date)
Database.register_adapter(datetime.datetime, django_sqlite.adapt_datetime)

_warned = False


def _load_sqlite_vec(conn: Any) -> str | None:
    """Load sqlite-vec into ``conn``; its version, or None (logged once) when it cannot load."""
    global _warned
    try:
        import sqlite_vec  # type: ignore[import-untyped]  # ships no types

        conn.enable_load_extension(True)
        try:
            sqlite_vec.load(conn)
        finally:
            conn.enable_load_extension(False)
        return str(conn.execute("SELECT vec_version()").fetchone()[0])
    except Exception as exc:  # no loader in this SQLite, no extension file: scan with numpy
        if not _warned:
            _warned = True
            logger.warning("SQLite: sqlite-vec could not be loaded (%s); vector search falls back", exc)
        return None


class SQLiteCursorWrapper(Database.Cursor):
    """Django's "format" and "pyformat" parameters, on this module's cursor."""

    def execute(self, query: str, params: Any = None) -> Any:
        if params is None:
            return super().execute(query)
        names = list(params) if isinstance(params, Mapping) else None
        return super().execute(self.convert_query(query, param_names=names), params)

    def executemany(self, query: str, param_list: Any) -> Any:
        peekable, param_list = tee(iter(param_list))
        first = next(peekable, None)
        names = list(first) if first and isinstance(first, Mapping) else None
        return super().executemany(self.convert_query(query, param_names=names), param_list)

    convert_query = django_sqlite.SQLiteCursorWrapper.convert_query


class DatabaseWrapper(django_sqlite.DatabaseWrapper):
    Database = Database
    sqlite_vec_version: str | None = None

    @async_unsafe
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # Django's own steps (django.db.backends.sqlite3.base), on this module's connect
        conn = Database.connect(**conn_params)
        register_functions(conn)
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA legacy_alter_table = OFF")
        for init_command in self.init_commands:  # type: ignore[attr-defined]  # set by get_connection_params
            if init_command := init_command.strip():
                conn.execute(init_command)
        self.sqlite_vec_version = _load_sqlite_vec(conn)
        return conn

    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=SQLiteCursorWrapper)
