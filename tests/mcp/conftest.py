"""MCP tool servers (docs/mcp.md): a real MCP server written with the ``mcp`` package's server side
(tests/fakes/mcp_server.py) started in a subprocess on a free loopback port, or over stdio; runs
driven through the real ASGI application with the real OpenAI SDK against the fake provider."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import alice  # noqa: F401
from tests.fakes import FakeOpenAI
from tests.procs import ROOT
from tests.realtime.conftest import _engine_cleanup, application, connect  # noqa: F401

STDIO_COMMAND = (sys.executable, ["-m", "tests.fakes.mcp_server", "--transport", "stdio"])


@dataclass
class McpProcess:
    port: int
    marker_dir: Path
    popen: subprocess.Popen[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def requests(self) -> list[str]:
        log = self.marker_dir / "requests.log"
        return log.read_text().splitlines() if log.exists() else []


@contextlib.contextmanager
def mcp_http_server(marker_dir: Path, *, token: str = "") -> Iterator[McpProcess]:
    args = [
        sys.executable,
        "-m",
        "tests.fakes.mcp_server",
        "--transport",
        "http",
        "--marker-dir",
        str(marker_dir),
    ]
    if token:
        args += ["--token", token]
    popen = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert popen.stdout is not None
        line = popen.stdout.readline()
        if not line.startswith("READY "):
            raise RuntimeError(f"the MCP test server did not start: {line!r}")
        yield McpProcess(port=int(line.split()[1]), marker_dir=marker_dir, popen=popen)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(5)
        if popen.stdout is not None:
            popen.stdout.close()


@pytest.fixture
def mcp_http(tmp_path: Path) -> Iterator[McpProcess]:
    marker_dir = tmp_path / "mcp-markers"
    marker_dir.mkdir()
    with mcp_http_server(marker_dir) as server:
        yield server


@pytest.fixture
def fake_openai(settings) -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        settings.OPENAI_BASE_URL = server.base_url
        settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": "sk-test"}
        yield server
