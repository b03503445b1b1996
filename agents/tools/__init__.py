"""Server tools: a registry of Python functions agents can call (SPEC section 7).

The run engine calls ``execute_server_tool``; agents list tools with ``builtin_tool_spec``.
See docs/tools.md.
"""

from agents.tools.base import ServerTool, ToolContext, ToolError, ToolOutcome, error_outcome
from agents.tools.registry import (
    ToolRegistry,
    builtin_tool_spec,
    execute_server_tool,
    server_tool_registry,
)

__all__ = [
    "ServerTool",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "ToolRegistry",
    "builtin_tool_spec",
    "error_outcome",
    "execute_server_tool",
    "server_tool_registry",
]
