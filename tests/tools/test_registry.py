"""The registry: the built-ins are there, their specs fit Agent.tools, and bad tools are refused."""

from __future__ import annotations

from typing import Any

import pytest

from agents.services import tool_specs_validate
from agents.tools import ServerTool, ToolContext, ToolOutcome, builtin_tool_spec, server_tool_registry
from agents.tools.registry import ToolRegistry


class EchoTool:
    name = "echo"
    description = "Say it back."
    parameters: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}}

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        return ToolOutcome(result=arguments.get("text", ""))


def test_the_builtins_are_registered():
    registry = server_tool_registry()
    assert registry is server_tool_registry()
    assert {"current_time", "query_database"} <= set(registry.names())
    assert all(isinstance(registry.get(name), ServerTool) for name in registry.names())
    assert registry.get("nope") is None


@pytest.mark.parametrize("name", ["current_time", "query_database"])
def test_a_builtin_spec_is_a_valid_agent_tool_spec(name):
    spec = builtin_tool_spec(name)
    assert set(spec) == {"name", "description", "parameters", "execution"}
    assert spec["execution"] == "server"
    assert spec["name"] == name
    assert tool_specs_validate([spec]) == [spec]


def test_specs_lists_every_tool_in_name_order():
    specs = server_tool_registry().specs()
    assert [spec["name"] for spec in specs] == server_tool_registry().names()
    assert tool_specs_validate(specs) == specs


def test_a_spec_is_a_copy_that_cannot_change_the_tool():
    spec = builtin_tool_spec("query_database")
    spec["parameters"]["properties"]["sql"]["maxLength"] = 10**9
    assert builtin_tool_spec("query_database")["parameters"]["properties"]["sql"]["maxLength"] == 20_000


def test_an_unknown_builtin_spec_raises_lookup_error():
    with pytest.raises(LookupError):
        builtin_tool_spec("launch_missiles")


def test_a_tool_registers_and_unregisters():
    registry = ToolRegistry()
    tool = registry.register(EchoTool())
    assert registry.get("echo") is tool
    assert registry.spec("echo")["parameters"] == EchoTool.parameters
    registry.unregister("echo")
    assert registry.names() == []


def test_a_second_tool_with_the_same_name_is_refused_unless_replacing():
    registry = ToolRegistry()
    registry.register(EchoTool())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(EchoTool())
    replacement = registry.register(EchoTool(), replace=True)
    assert registry.get("echo") is replacement


@pytest.mark.parametrize(
    ("attribute", "value", "fragment"),
    [
        ("name", "has spaces", "not an identifier"),
        ("name", "", "not an identifier"),
        ("description", None, "no description"),
        ("parameters", {"type": "array"}, "type 'object'"),
        ("parameters", "{}", "type 'object'"),
        ("parameters", {"type": "object", "properties": {"x": {"type": "nope"}}}, "not a valid JSON Schema"),
    ],
)
def test_a_malformed_tool_is_refused_at_registration(attribute, value, fragment):
    tool = EchoTool()
    setattr(tool, attribute, value)
    with pytest.raises(ValueError, match=fragment):
        ToolRegistry().register(tool)
