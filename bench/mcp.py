"""MCP tool calls through Nexus's client: the latency of one call, and how long a cancelled call
takes to let go (the stop path), over Streamable HTTP and stdio.

Run: ``.venv/bin/python bench/mcp.py [--runs 20]``

The server is tests/fakes/mcp_server.py (the ``mcp`` package's MCPServer) in a subprocess. Each call
opens its own connection (docs/mcp.md), so a call's time includes the handshake; over stdio it
includes starting the server's Python process. "cancel" is the time from cancelling a task that
is calling the 30 s ``slow`` tool to that task being done (``execute_mcp_tool`` gives the closing
connection at most 0.5 s). Medians and maxima are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexus.settings")
os.environ["NEXUS_EGRESS_ALLOW"] = "127.0.0.1,::1"
os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")


async def _bench(runs: int, port: int) -> None:
    import django

    django.setup()
    from agents.models import McpServer
    from agents.tools.base import ToolContext
    from agents.tools.mcp import McpBinding, execute_mcp_tool

    context = ToolContext(user_id=None, conversation_id=None)
    marker = tempfile.mkdtemp()
    servers = {
        "http": McpServer(name="bench", url=f"http://127.0.0.1:{port}/mcp"),
        "stdio": McpServer(
            name="bench",
            transport="stdio",
            command=sys.executable,
            args=["-m", "tests.fakes.mcp_server", "--transport", "stdio", "--marker-dir", marker],
        ),
    }
    schema = {"type": "object"}
    for transport, server in servers.items():
        add = McpBinding(name="bench__add", server=server, tool="add", description="", parameters=schema)
        slow = McpBinding(name="bench__slow", server=server, tool="slow", description="", parameters=schema)
        calls, cancels = [], []
        for _ in range(runs):
            started = time.perf_counter()
            outcome = await execute_mcp_tool(add, {"a": 1, "b": 2}, context=context)
            calls.append(time.perf_counter() - started)
            assert outcome.result["text"] == "3", outcome
        for _ in range(max(3, runs // 4)):
            task = asyncio.ensure_future(execute_mcp_tool(slow, {"seconds": 30}, context=context))
            await asyncio.sleep(1.0 if transport == "stdio" else 0.3)  # the call is in flight
            started = time.perf_counter()
            task.cancel()
            await asyncio.wait({task})
            cancels.append(time.perf_counter() - started)
        print(
            f"{transport:5}  call: median {statistics.median(calls) * 1000:6.1f} ms, "
            f"max {max(calls) * 1000:6.1f} ms   cancel: median {statistics.median(cancels) * 1000:6.1f} ms, "
            f"max {max(cancels) * 1000:6.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    server_process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.mcp_server", "--transport", "http"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server_process.stdout is not None
        port = int(server_process.stdout.readline().split()[1])
        asyncio.run(_bench(args.runs, port))
    finally:
        server_process.terminate()
        server_process.wait(5)


if __name__ == "__main__":
    main()
