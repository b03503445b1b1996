"""docker-compose.yml cannot run here (no Docker engine): check its shape and that every
service's command exists in this project."""

from __future__ import annotations

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
