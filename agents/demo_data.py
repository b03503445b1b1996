"""The demo data set that the `query_database` tool reads (portfolios and holdings, seed 004).

It lives in its own SQLite file under var/, apart from the application database, so the tool's
read-only connection can never reach application tables.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from django.conf import settings

PORTFOLIOS = [
    (1, "Growth", "alice", 125_000.0),
    (2, "Income", "bob", 80_500.0),
    (3, "Balanced", "carol", 230_250.0),
]
HOLDINGS = [
    (1, 1, "NVDA", 120, 118.5),
    (2, 1, "MSFT", 60, 415.2),
    (3, 1, "TSLA", 40, 251.1),
    (4, 2, "JNJ", 150, 158.3),
    (5, 2, "KO", 300, 62.4),
    (6, 2, "VZ", 400, 40.8),
    (7, 3, "AAPL", 200, 227.5),
    (8, 3, "BND", 500, 72.9),
    (9, 3, "VTI", 250, 281.6),
]


def demo_database_path() -> Path:
    return Path(settings.VAR_DIR) / "demo_portfolios.sqlite3"


def demo_data_ensure() -> Path:
    """Create (or refresh) the demo data set; the same rows every time."""
    path = demo_database_path()
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE IF NOT EXISTS portfolios (
                id INTEGER PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL, cash REAL NOT NULL
            );
            CREATE TABLE IF NOT EXISTS holdings (
                id INTEGER PRIMARY KEY, portfolio_id INTEGER NOT NULL REFERENCES portfolios(id),
                symbol TEXT NOT NULL, quantity INTEGER NOT NULL, price REAL NOT NULL
            );
            """
        )
        db.executemany("INSERT OR REPLACE INTO portfolios VALUES (?, ?, ?, ?)", PORTFOLIOS)
        db.executemany("INSERT OR REPLACE INTO holdings VALUES (?, ?, ?, ?, ?)", HOLDINGS)
    return path
