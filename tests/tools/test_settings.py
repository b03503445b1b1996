"""The tools settings fail loudly at start on a value they cannot use."""

from __future__ import annotations

import pytest

from tests.procs import base_env, manage


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mysql://reader@db/reports", "NEXUS_TOOLS_DATABASE_URL must be a sqlite:/// or postgres:// URL"),
        ("/var/lib/reports.sqlite3", "NEXUS_TOOLS_DATABASE_URL must be a sqlite:/// or postgres:// URL"),
        ("sqlite:///", "NEXUS_TOOLS_DATABASE_URL names no database"),
    ],
)
def test_a_bad_tools_database_url_stops_the_process(tmp_path, value, expected):
    result = manage(
        "check", env=base_env(NEXUS_VAR_DIR=str(tmp_path), NEXUS_TOOLS_DATABASE_URL=value), timeout=60
    )
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_row_limit_stops_the_process(tmp_path):
    result = manage(
        "check", env=base_env(NEXUS_VAR_DIR=str(tmp_path), NEXUS_TOOLS_QUERY_MAX_ROWS="0"), timeout=60
    )
    assert result.returncode != 0
    assert "NEXUS_TOOLS_QUERY_MAX_ROWS=0 is below the minimum 1" in result.stderr
