"""The client the MCP conformance kit (``@modelcontextprotocol/conformance``, npm) drives: Nexus's
own MCP client (``agents.tools.mcp``: the egress-checked Streamable HTTP connection, the tool
list, the call and its mapping to a ToolOutcome) against the kit's scenario server.

``python -m tests.mcp.conformance_client <server url>``: the kit runs this with the URL of its
scenario's server as the last argument and the scenario's name in MCP_CONFORMANCE_SCENARIO. It
lists the server's tools and calls each one with arguments made from its schema (numbers get
1, 2, ...; strings "x"), printing each outcome. Exit status 0 when every step worked.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexus.settings")
os.environ.setdefault("NEXUS_EGRESS_ALLOW", "127.0.0.1,::1")


def _arguments(schema: dict[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for index, (name, prop) in enumerate((schema.get("properties") or {}).items(), start=1):
        kind = prop.get("type") if isinstance(prop, dict) else None
        values[name] = {"number": index, "integer": index, "boolean": True, "string": "x"}.get(kind, "x")
    return values


async def main(url: str) -> int:
    import django

    django.setup()
    from agents.models import McpServer
    from agents.tools.mcp import mcp_client, result_outcome

    server = McpServer(name="conformance", url=url)  # never saved: no database needed
    async with mcp_client(server, credential=None) as client:
        listed = await client.list_tools()
        tools = [(t.name, t.input_schema or {}) for t in listed.tools]
        print(f"tools: {[name for name, _ in tools]}")
        for name, schema in tools:
            result = await client.call_tool(name, _arguments(schema))
            outcome = result_outcome(result)
            print(f"{name}: is_error={outcome.is_error} result={outcome.result}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[-1])))
