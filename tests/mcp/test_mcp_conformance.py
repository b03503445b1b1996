"""The MCP conformance kit (``@modelcontextprotocol/conformance``, npm) drives Nexus's MCP client
(tests/mcp/conformance_client.py) through its client scenarios that apply to Nexus: the
initialize handshake, a tool call, and SSE stream resumption with its retry timing.

The kit and the Node.js it needs (22 or later: the machine's may be older) are pinned in
tests/mcp/conformance/package.json and installed once with npm into ~/.cache/nexus (outside the
checkout, reused by later runs). Scenarios left out, and why: docs/mcp.md "Conformance".
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI
from tests.procs import ROOT, base_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KIT = Path(__file__).parent / "conformance"
SCENARIOS = ["initialize", "tools_call", "sse-retry"]


def _unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message}; the conformance kit is mandatory in CI")
    pytest.skip(message)


@pytest.fixture(scope="module")
def kit() -> Path:
    npm = shutil.which("npm")
    if npm is None:
        _unavailable("npm is not installed")
    lock = (KIT / "package-lock.json").read_bytes()
    home = Path.home() / ".cache" / "nexus" / f"mcp-conformance-{hashlib.sha256(lock).hexdigest()[:12]}"
    entry = home / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    if not entry.exists():
        home.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(KIT / name, home / name)
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=home, capture_output=True, text=True, timeout=400
        )
        if done.returncode != 0 or not entry.exists():
            _unavailable(f"npm ci of the conformance kit failed: {done.stderr[-500:]}")
    return home


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_conformance_kit_drives_our_client(kit: Path, scenario: str, tmp_path: Path) -> None:
    node = kit / "node_modules" / ".bin" / "node"
    entry = kit / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    # The kit appends the scenario server's URL to the command.
    client = f"{sys.executable} -m tests.mcp.conformance_client"
    done = subprocess.run(
        [str(node), str(entry), "client", "--command", client, "--scenario", scenario, "-o", str(tmp_path)],
        cwd=ROOT,
        env=base_env(NEXUS_EGRESS_ALLOW="127.0.0.1,::1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "OVERALL: PASSED" in output and " 0 failed" in output, output[-3000:]
