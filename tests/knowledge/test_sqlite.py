"""The knowledge tests again on SQLite (FTS5, sqlite-vec): CI runs the suite on PostgreSQL, so a
subprocess runs ``tests/knowledge`` with a SQLite DATABASE_URL."""

from __future__ import annotations

import subprocess

import pytest
from django.db import connection

from tests.procs import PYTHON, ROOT, base_env

pytestmark = pytest.mark.slow


def test_the_knowledge_tests_pass_on_sqlite(tmp_path):
    if connection.vendor == "sqlite":
        pytest.skip("this run is on SQLite already")
    env = base_env(DATABASE_URL=f"sqlite:///{tmp_path / 'knowledge.sqlite3'}", NEXUS_VAR_DIR=str(tmp_path))
    run = subprocess.run(
        [
            PYTHON,
            "-m",
            "pytest",
            "tests/knowledge",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "not on_sqlite",
            # these start daphne/workers on databases of their own (the live one on a SQLite file)
            "--ignore",
            "tests/knowledge/test_tasks_live.py",
            "--ignore",
            "tests/knowledge/test_tasks_worker.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout


def test_sqlite_vec_is_loaded_on_sqlite(tmp_path):
    """Nexus's SQLite engine loads sqlite-vec, and the index uses it (not the numpy fallback)."""
    env = base_env(DATABASE_URL=f"sqlite:///{tmp_path / 'probe.sqlite3'}", NEXUS_VAR_DIR=str(tmp_path))
    code = (
        "import django; django.setup();"
        "from django.db import connection; connection.ensure_connection();"
        "print(connection.settings_dict['ENGINE'], connection.sqlite_vec_version)"
    )
    run = subprocess.run([PYTHON, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    engine, version = run.stdout.split()[:2]
    assert engine == "core.sqlite_backend" and version.startswith("v0.")
