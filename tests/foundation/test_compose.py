"""docker-compose.yml cannot run here (no Docker engine): check its shape and that every
service's command exists in this project."""

from __future__ import annotations

import shutil
import subprocess
import sys

import yaml

from tests.procs import ROOT, base_env

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
        if command[0] == "python":
            assert command[1] == "manage.py" and (ROOT / "manage.py").exists()
            assert command[2] in commands, f"{name}: manage.py {command[2]} does not exist"
        else:
            assert shutil.which(command[0], path=str(ROOT / ".venv" / "bin")) or shutil.which(command[0])
            module, _, attr = command[-1].partition(":")
            assert module == "nexus.asgi" and attr == "application"
            assert (ROOT / "nexus" / "asgi.py").exists()
    assert SERVICES["worker"]["command"][2:] == ["runworker", "nexus-runs"]


def test_the_web_daphne_limit_is_above_the_applications():
    command = SERVICES["web"]["command"]
    limit = int(command[command.index("--websocket-max-message-size") + 1])
    assert limit > 1_048_576
