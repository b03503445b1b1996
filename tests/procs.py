"""Helpers for tests that start real processes (daphne, workers, redis-server) on free ports.

Every process is started in its own process group and killed with it, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(**overrides: str) -> dict[str, str]:
    """The current environment minus Nexus's own settings, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEXUS_", "DJANGO_", "PYTEST"))}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = "nexus.settings"
    # The fake provider servers listen on the loopback interface, refused by default.
    env["NEXUS_EGRESS_ALLOW"] = "127.0.0.1,::1"
    env.update(overrides)
    return env


class Process:
    """A child process in its own group, with its output in a log file."""

    def __init__(self, args: list[str], *, env: Mapping[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            args, cwd=cwd, env=dict(env), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for_http(url: str, *, timeout: float = 30.0, process: Process | None = None) -> httpx.Response:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise RuntimeError(f"process exited early:\n{process.output()[-4000:]}")
        try:
            return httpx.get(url, timeout=2.0)
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s ({last})")


def compose_environment(service: str, values: Mapping[str, str]) -> dict[str, str]:
    """A docker-compose.yml service's environment as compose would give it, with ``values`` for
    the ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` references (``$$`` is a ``$``)."""
    import re

    import yaml

    def resolve(text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name, op, arg = match.group(1), match.group(2), match.group(3) or ""
            value = values.get(name, "")
            if op == ":?" and not value:
                raise KeyError(f"{name} is required: {arg}")
            return value or (resolve(arg) if op == ":-" else "")

        return re.sub(r"\$\$|\$\{(\w+)(?:(:[-?])((?:[^{}]|\{[^{}]*\})*))?\}", one, text)

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    environment = compose["services"][service].get("environment") or {}
    return {key: resolve(str(value)) for key, value in environment.items()}


def manage(*args: str, env: Mapping[str, str], timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=timeout
    )


def start_daphne(*, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> tuple[Process, int]:
    port = port or free_port()
    proc = Process(
        [PYTHON, "-m", "nexus.serve", "-b", "127.0.0.1", "-p", str(port)],  # the shared daphne flags
        env=env,
        log_path=log_dir / f"daphne-{port}.log",
    )
    wait_for_http(f"http://127.0.0.1:{port}/health", process=proc)
    return proc, port


@contextlib.contextmanager
def processes() -> Iterator[list[Process]]:
    """Collect started processes; stop them all at the end, whatever happens."""
    started: list[Process] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()
