"""The embedded default, as `make run` uses it: SQLite, the in-memory layer, no configuration
beyond the demo passwords `make run` passes. Migrate, seed, serve the admin login and /health
from a real daphne process."""

from __future__ import annotations

import pytest

from tests.procs import base_env, manage, processes, start_daphne, wait_for_http

pytestmark = pytest.mark.slow


def test_migrate_seed_and_serve_with_the_embedded_defaults(tmp_path):
    env = base_env(
        NEXUS_VAR_DIR=str(tmp_path),
        NEXUS_DEMO_PASSWORD="nexus-demo-password",
        NEXUS_ADMIN_PASSWORD="nexus-admin-password",
    )
    migrate = manage("migrate", "--noinput", env=env)
    assert migrate.returncode == 0, migrate.stderr
    seed = manage("seed_demo", env=env)
    assert seed.returncode == 0, seed.stderr
    assert "demo / nexus-demo-password" in seed.stdout
    assert (tmp_path / "db.sqlite3").exists()
    with processes() as started:
        daphne, port = start_daphne(env=env, log_dir=tmp_path)
        started.append(daphne)
        health = wait_for_http(f"http://127.0.0.1:{port}/health")
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "ok"
        assert body["database"]["vendor"] == "sqlite"
        assert body["channel_layer"]["backend"] == "memory"
        login = wait_for_http(f"http://127.0.0.1:{port}/admin/login/")
        assert login.status_code == 200
        assert "csrfmiddlewaretoken" in login.text
        css = wait_for_http(f"http://127.0.0.1:{port}/static/admin/css/base.css")
        assert css.status_code == 200
