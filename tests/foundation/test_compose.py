"""docker-compose.yml cannot run here (no Docker engine): check its shape and that every
service's command exists in this project."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
import yaml

from tests.procs import ROOT, base_env, compose_environment

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_it_has_the_topology():
    assert {"postgres", "redis", "migrate", "web", "worker"} <= set(SERVICES)
    for name in ("migrate", "web", "worker"):
        env = SERVICES[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgres://")
        assert env["REDIS_URL"].startswith("redis://")
        assert env["NEXUS_RUN_MODE"] == "worker"
    assert SERVICES["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def _management_commands() -> set[str]:
    code = "import django; django.setup(); from django.core.management import get_commands; print(*get_commands())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=base_env(), capture_output=True, text=True
    )
    return set(out.stdout.split())


def test_every_command_exists_in_the_project():
    commands = _management_commands()
    for name in ("migrate", "web", "worker"):
        command = SERVICES[name]["command"]
        assert command[0] == "python"
        if command[1] == "-m":  # daphne, through the one definition of its flags
            assert command[2] == "nexus.serve" and (ROOT / "nexus" / "serve.py").exists()
        else:
            assert command[1] == "manage.py" and (ROOT / "manage.py").exists()
            assert command[2] in commands, f"{name}: manage.py {command[2]} does not exist"
    assert SERVICES["worker"]["command"][2:] == ["runworker", "nexus-runs"]


def test_compose_the_dockerfile_and_the_makefile_start_daphne_through_nexus_serve():
    assert SERVICES["web"]["command"][:3] == ["python", "-m", "nexus.serve"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'CMD ["python", "-m", "nexus.serve", "-b", "0.0.0.0", "-p", "8000"]' in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "$(BIN)/python -m nexus.serve -b $(HOST) -p $(PORT)" in makefile
    for text in (dockerfile, makefile, (ROOT / "docker-compose.yml").read_text()):
        assert "--websocket-max" not in text  # no second definition of daphne's limits


def test_nexus_serve_sets_both_daphne_limits_above_the_applications(settings):
    from daphne.cli import CommandLineInterface

    from nexus.serve import daphne_args

    parser = CommandLineInterface().parser
    args = parser.parse_args(daphne_args(["-b", "127.0.0.1", "-p", "8000"]))
    assert args.websocket_max_message_size == args.websocket_max_frame_size == 4 * 1_048_576
    assert args.application == "nexus.asgi:application" and args.port == 8000
    settings.NEXUS_WS_MAX_MESSAGE_BYTES = 3_000_000
    args = parser.parse_args(daphne_args([]))
    assert args.websocket_max_message_size == args.websocket_max_frame_size == 12_000_000
    # flags given on the command line come after the shared ones and win
    args = parser.parse_args(daphne_args(["--websocket-max-frame-size", "5000000"]))
    assert args.websocket_max_frame_size == 5_000_000


# --- production hardening (docs/security.md) ------------------------------------------------------

SECRETS = {
    "DJANGO_SECRET_KEY": "x" * 40,
    "PUBLIC_HOST": "nexus.example.com",
    "POSTGRES_PASSWORD": "operator-secret",
    "NEXUS_DB_PASSWORD": "app-secret",
    "REDIS_PASSWORD": "redis-secret",
    "NEXUS_TOOLS_DB_PASSWORD": "tools-secret",
}


def test_redis_has_a_password_and_a_memory_ceiling():
    redis_service = SERVICES["redis"]
    command = " ".join(redis_service["command"]).replace("$$", "$")  # compose's escape
    assert '--requirepass "$REDIS_PASSWORD"' in command
    assert '--maxmemory "$REDIS_MAXMEMORY"' in command and "--maxmemory-policy noeviction" in command
    env = compose_environment("redis", SECRETS)
    assert env["REDIS_PASSWORD"] == env["REDISCLI_AUTH"] == "redis-secret"
    assert env["REDIS_MAXMEMORY"]
    assert redis_service["user"] == "redis"  # the custom command bypasses the image's own drop from root
    for name in ("migrate", "web", "worker", "housekeeping"):
        assert compose_environment(name, SECRETS)["REDIS_URL"] == "redis://:redis-secret@redis:6379/0"


def test_the_app_connects_as_its_own_role_not_the_superuser():
    postgres = compose_environment("postgres", SECRETS)
    assert postgres["POSTGRES_USER"] == "postgres"
    for name in ("migrate", "web", "worker", "housekeeping"):
        url = compose_environment(name, SECRETS)["DATABASE_URL"]
        assert url == "postgres://nexus:app-secret@postgres:5432/nexus"
    assert "operator-secret" not in str([compose_environment(n, SECRETS) for n in ("web", "worker")])
    mounts = SERVICES["postgres"]["volumes"]
    assert "./docker/postgres:/docker-entrypoint-initdb.d:ro" in mounts
    assert (ROOT / "docker/postgres/10-nexus-app-role.sh").is_file()


def test_the_containers_do_not_run_as_root():
    users = [
        line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("USER ")
    ]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    for name in ("web", "worker", "housekeeping"):
        assert "user" not in SERVICES[name]  # the image's user applies
        assert SERVICES[name]["cap_drop"] == ["ALL"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored  # local secrets are never baked into the image


def test_housekeeping_flushes_expired_tokens_and_sessions_on_a_schedule():
    command = " ".join(SERVICES["housekeeping"]["command"]).replace("$$", "$")  # compose's escape
    assert "python manage.py flushexpiredtokens" in command
    assert "python manage.py clearsessions" in command
    assert 'sleep "$NEXUS_HOUSEKEEPING_SECONDS"' in command
    assert compose_environment("housekeeping", SECRETS)["NEXUS_HOUSEKEEPING_SECONDS"] == "3600"
    assert {"flushexpiredtokens", "clearsessions"} <= _management_commands()


@pytest.mark.postgres
@pytest.mark.slow
def test_the_init_script_makes_a_role_that_is_no_superuser_and_can_migrate(postgres_url, tmp_path):
    """docker/postgres/10-nexus-app-role.sh against the machine's PostgreSQL, as the image runs it."""
    parts = urlsplit(postgres_url)
    name = f"nexus_sessions_role_{secrets.token_hex(4)}"
    admin = {"PGHOST": parts.hostname or "127.0.0.1", "PGPORT": str(parts.port or 5432)}
    script_env = {
        **os.environ,
        **admin,
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": parts.path.lstrip("/") or "postgres",
        "NEXUS_DB_USER": name,
        "NEXUS_DB_NAME": name,
        "NEXUS_DB_PASSWORD": "app-secret",
    }

    def psql(sql: str) -> str:
        return subprocess.run(
            ["psql", "-tAX", "-U", script_env["POSTGRES_USER"], "-d", script_env["POSTGRES_DB"], "-c", sql],
            env=script_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    try:
        made = subprocess.run(
            ["sh", str(ROOT / "docker" / "postgres" / "10-nexus-app-role.sh")],
            env=script_env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        # pgvector where the server has it (the compose image does; this machine's does not)
        vector = subprocess.run(
            ["sh", str(ROOT / "docker" / "postgres" / "15-pgvector.sh")],
            env=script_env,
            capture_output=True,
            text=True,
        )
        assert vector.returncode == 0, vector.stderr
        available = psql("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'") == "1"
        enabled = subprocess.run(
            [
                "psql",
                "-tAX",
                "-U",
                script_env["POSTGRES_USER"],
                "-d",
                name,
                "-c",
                "SELECT count(*) FROM pg_extension WHERE extname = 'vector'",
            ],
            env=script_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert enabled == ("1" if available else "0")
        flags = psql(f"SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = '{name}'")
        assert flags == "f|f|f"
        assert psql(f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{name}'") == name
        url = f"postgres://{name}:app-secret@{admin['PGHOST']}:{admin['PGPORT']}/{name}"
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=base_env(DATABASE_URL=url, NEXUS_VAR_DIR=str(tmp_path)),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert migrate.returncode == 0, migrate.stderr[-3000:]
    finally:
        psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        psql(f'DROP ROLE IF EXISTS "{name}"')
