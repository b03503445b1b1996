"""A small MCP server for tests, written with the ``mcp`` package's own server side (MCPServer).

Run as a module: ``python -m tests.fakes.mcp_server --transport http`` prints ``READY <port>`` and
serves Streamable HTTP on 127.0.0.1 at ``/mcp``; ``--transport stdio`` speaks over stdin/stdout.
``--marker-dir D`` also logs each HTTP request to ``D/requests.log``. ``--token T`` makes the HTTP server refuse (401) every request whose ``Authorization`` is not
``Bearer T``. ``--marker-dir D``: the ``slow`` tool writes ``D/slow-started`` when it starts and
``D/slow-cancelled`` when its call is cancelled (the client gave it up), so a test can see that
a stop reached the server.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError


def build_server(marker_dir: Path | None) -> MCPServer:
    server = MCPServer("nexus-test-tools")

    @server.tool(description="Add two integers.")
    async def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Say the text back, upper-cased.")
    async def shout(text: str) -> str:
        return text.upper() + "!"

    @server.tool(description="Always fails.")
    async def broken() -> str:
        raise ToolError("the broken tool broke")

    @server.tool(description="Sleep, then answer.")
    async def slow(seconds: float = 30.0) -> str:
        if marker_dir is not None:
            (marker_dir / "slow-started").write_text("1")
        try:
            await asyncio.sleep(seconds)
        except BaseException:
            if marker_dir is not None:
                (marker_dir / "slow-cancelled").write_text("1")
            raise
        return "slept"

    return server


def _request_log(app: Any, marker_dir: Path) -> Any:
    """Append ``METHOD path`` to ``marker_dir/requests.log`` for every HTTP request that arrives."""

    async def logged(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            with (marker_dir / "requests.log").open("a") as log:
                log.write(f"{scope['method']} {scope['path']}\n")
        await app(scope, receive, send)

    return logged


def _token_guard(app: Any, token: str) -> Any:
    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await app(scope, receive, send)

    return guarded


async def _serve_http(server: MCPServer, token: str | None, marker_dir: Path | None) -> None:
    import uvicorn

    app: Any = server.streamable_http_app(host="127.0.0.1")
    if token:
        app = _token_guard(app, token)
    if marker_dir is not None:
        app = _request_log(app, marker_dir)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["http", "stdio"], default="http")
    parser.add_argument("--token", default="")
    parser.add_argument("--marker-dir", default="")
    args = parser.parse_args()
    marker_dir = Path(args.marker_dir) if args.marker_dir else None
    server = build_server(marker_dir)
    if args.transport == "stdio":
        server.run("stdio")
        return
    try:
        asyncio.run(_serve_http(server, args.token or None, marker_dir))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
