"""The process-wide registry of server tools, and the one door the run engine calls them through."""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import logging
import re
from typing import Any

from django.conf import settings
from jsonschema import exceptions as schema_exceptions
from jsonschema import validators
from jsonschema.protocols import Validator

from agents.tools.base import ServerTool, ToolContext, ToolError, ToolOutcome, error_outcome
from agents.tools.clock import CurrentTimeTool
from agents.tools.knowledge_search import KnowledgeSearchTool
from agents.tools.query_database import QueryDatabaseTool

logger = logging.getLogger(__name__)

# The same rule as agents.services.tool_specs_validate, so every registered tool can go in Agent.tools.
_TOOL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")
# Messages quote what the model sent; a runaway argument must not flood the conversation.
_MAX_MESSAGE_CHARS = 300


def _shorten(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ToolRegistry:
    """Server tools by name, each with a validator compiled from its JSON Schema."""

    def __init__(self) -> None:
        self._tools: dict[str, tuple[ServerTool, Validator]] = {}

    def register(self, tool: ServerTool, *, replace: bool = False) -> ServerTool:
        """Add ``tool``; its name and schema are checked now so a bad tool fails at start."""
        name = getattr(tool, "name", None)
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise ValueError(f"Tool name {name!r} is not an identifier")
        if name in self._tools and not replace:
            raise ValueError(f"A tool named {name!r} is already registered")
        if not isinstance(getattr(tool, "description", None), str):
            raise ValueError(f"Tool {name!r} has no description")
        parameters = getattr(tool, "parameters", None)
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            raise ValueError(f"Tool {name!r}: parameters must be a JSON Schema with type 'object'")
        validator_class = validators.validator_for(parameters, default=validators.Draft202012Validator)
        try:
            validator_class.check_schema(parameters)
        except schema_exceptions.SchemaError as exc:
            raise ValueError(f"Tool {name!r}: parameters is not a valid JSON Schema: {exc.message}") from None
        self._tools[name] = (tool, validator_class(parameters))
        return tool

    def unregister(self, name: str) -> None:
        """Remove a tool (tests use this to undo what they registered)."""
        self._tools.pop(name, None)

    def get(self, name: str) -> ServerTool | None:
        """The tool called ``name``, or None."""
        entry = self._tools.get(name)
        return entry[0] if entry else None

    def validator(self, name: str) -> Validator:
        """The compiled validator of a registered tool's parameters."""
        return self._tools[name][1]

    def names(self) -> list[str]:
        """Registered tool names, sorted."""
        return sorted(self._tools)

    def specs(self) -> list[dict[str, Any]]:
        """Every tool as an Agent.tools spec, sorted by name."""
        return [self.spec(name) for name in self.names()]

    def spec(self, name: str) -> dict[str, Any]:
        """One tool as an Agent.tools spec; raises LookupError for an unknown name."""
        tool = self.get(name)
        if tool is None:
            raise LookupError(f"No server tool named {name!r}")
        # A deep copy: an agent's stored spec must never alias (and so mutate) the live schema.
        return {
            "name": tool.name,
            "description": tool.description,
            "parameters": copy.deepcopy(tool.parameters),
            "execution": "server",
        }


@functools.cache
def server_tool_registry() -> ToolRegistry:
    """The process-wide registry, holding the built-in tools."""
    registry = ToolRegistry()
    registry.register(CurrentTimeTool())
    registry.register(KnowledgeSearchTool())
    registry.register(QueryDatabaseTool())
    return registry


def builtin_tool_spec(name: str) -> dict[str, Any]:
    """The spec dict (name, description, parameters, execution "server") to put in Agent.tools."""
    return server_tool_registry().spec(name)


def _arguments_parse(arguments: Any) -> dict[str, Any]:
    # Providers hand over arguments either decoded or as the model's raw JSON text.
    if arguments is None or arguments == "":
        return {}
    if isinstance(arguments, str | bytes):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            raise ToolError("Tool arguments are not valid JSON.") from None
    if not isinstance(arguments, dict):
        raise ToolError("Tool arguments must be a JSON object.")
    return arguments


def _arguments_check(name: str, validator: Validator, arguments: dict[str, Any]) -> None:
    error = schema_exceptions.best_match(validator.iter_errors(arguments))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path)
        prefix = f"Invalid arguments for {name}" + (f" at {where}" if where else "")
        raise ToolError(_shorten(f"{prefix}: {error.message}"))


def _result_check(name: str, outcome: Any) -> ToolOutcome:
    if not isinstance(outcome, ToolOutcome):
        logger.error("Server tool %s returned %r instead of a ToolOutcome", name, type(outcome))
        return error_outcome(f"The tool {name} failed.")
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and clients would choke on them.
        json.dumps(outcome.result, allow_nan=False)
    except (TypeError, ValueError):
        logger.error("Server tool %s returned a result that is not JSON", name)
        return error_outcome(f"The tool {name} returned a result that cannot be shown.")
    return outcome


async def execute_server_tool(name: str, arguments: Any, *, context: ToolContext) -> ToolOutcome:
    """Run a server tool and always answer with a ToolOutcome.

    Unknown tools, arguments that fail the tool's JSON Schema, a ToolError, any other exception
    and a timeout (``NEXUS_TOOLS_TIMEOUT``) all become ``ToolOutcome(is_error=True,
    result={"error": ...})`` with a message safe to show. Only cancellation propagates, so that
    stopping a run still stops its tool.
    """
    registry = server_tool_registry()
    tool = registry.get(name) if isinstance(name, str) else None
    if tool is None:
        return error_outcome(_shorten(f"Unknown tool: {name!r}."))
    try:
        parsed = _arguments_parse(arguments)
        _arguments_check(name, registry.validator(name), parsed)
    except ToolError as exc:
        return error_outcome(exc.message)

    timeout = float(settings.NEXUS_TOOLS_TIMEOUT)
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            outcome = await tool(parsed, context=context)
    except ToolError as exc:
        return error_outcome(_shorten(exc.message, 1000))
    except TimeoutError:
        if not deadline.expired():
            # The tool's own TimeoutError (a socket, a lock): a failure like any other.
            logger.exception("Server tool %s raised TimeoutError", name)
            return error_outcome(f"The tool {name} failed.")
        logger.warning("Server tool %s timed out after %.1f s", name, timeout)
        return error_outcome(f"The tool {name} took longer than {timeout:g} s and was stopped.")
    except Exception:
        logger.exception(
            "Server tool %s failed (conversation %s, agent %s)",
            name,
            context.conversation_id,
            context.agent_id,
        )
        return error_outcome(f"The tool {name} failed.")
    return _result_check(name, outcome)
