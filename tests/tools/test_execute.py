"""`execute_server_tool` never raises: every failure is an error outcome with a message safe to show."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from agents.tools import ToolContext, ToolError, ToolOutcome, execute_server_tool

Behaviour = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass
class ScriptedTool:
    """A server tool whose behaviour the test supplies."""

    name: str
    behaviour: Behaviour
    description: str = "A tool scripted by a test."
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    async def __call__(self, arguments: dict[str, Any], *, context: ToolContext) -> ToolOutcome:
        return await self.behaviour(arguments, context)


def assert_error(outcome: ToolOutcome, *fragments: str) -> str:
    assert outcome.is_error
    assert set(outcome.result) == {"error"}
    message = outcome.result["error"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message
    json.dumps(outcome.result)
    return message


async def test_an_unknown_tool_is_an_error_outcome(context):
    assert_error(await execute_server_tool("launch_missiles", {}, context=context), "Unknown tool", "launch")


@pytest.mark.parametrize("name", [None, 42, "", "x" * 5000])
async def test_a_nonsense_tool_name_is_an_error_outcome(context, name):
    message = assert_error(await execute_server_tool(name, {}, context=context))
    assert len(message) <= 300


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ([1, 2], "must be a JSON object"),
        ("not json at all", "not valid JSON"),
        ('"a string"', "must be a JSON object"),
        (7, "must be a JSON object"),
        ({}, "'sql' is a required property"),
        ({"sql": 5}, "at sql"),
        ({"sql": ""}, "at sql"),
        ({"sql": "SELECT 1", "limit": "ten"}, "at limit"),
        ({"sql": "SELECT 1", "limit": 0}, "at limit"),
        ({"sql": "SELECT 1", "drop": True}, "Additional properties"),
        ({"sql": "SELECT 1" + " " * 30_000}, "at sql"),
    ],
)
async def test_arguments_that_fail_the_schema_are_refused(context, demo_database, arguments, fragment):
    message = assert_error(await execute_server_tool("query_database", arguments, context=context), fragment)
    assert len(message) <= 300
    # Validation happens before the tool runs: the demo data set was never even created.
    assert not demo_database.exists()


async def test_arguments_may_arrive_as_the_models_json_text(context):
    outcome = await execute_server_tool("current_time", '{"timezone": "Asia/Tokyo"}', context=context)
    assert not outcome.is_error
    assert outcome.result["timezone"] == "Asia/Tokyo"
    assert not (await execute_server_tool("current_time", None, context=context)).is_error


async def test_the_tool_gets_validated_arguments_and_the_context(context, register_tool):
    seen: list[tuple[dict[str, Any], ToolContext]] = []

    async def remember(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        seen.append((arguments, ctx))
        return ToolOutcome(result={"ok": True})

    register_tool(
        ScriptedTool(
            name="remember",
            behaviour=remember,
            parameters={"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        )
    )
    outcome = await execute_server_tool("remember", {"n": 3}, context=context)
    assert outcome == ToolOutcome(result={"ok": True})
    assert seen == [({"n": 3}, context)]
    assert_error(await execute_server_tool("remember", {"n": "3"}, context=context), "at n")
    assert len(seen) == 1


async def test_an_exception_inside_a_tool_is_logged_but_never_shown(context, register_tool, caplog):
    async def explode(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        raise RuntimeError("connect to postgres://admin:hunter2@10.0.0.5/prod failed")

    register_tool(ScriptedTool(name="explode", behaviour=explode))
    with caplog.at_level(logging.ERROR, logger="agents.tools.registry"):
        outcome = await execute_server_tool("explode", {}, context=context)
    message = assert_error(outcome, "explode failed")
    assert "hunter2" not in message and "10.0.0.5" not in message
    assert "hunter2" in caplog.text  # the operator still gets the detail


async def test_a_tool_error_message_is_shown_as_is(context, register_tool):
    async def refuse(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        raise ToolError("The portfolio is closed.")

    register_tool(ScriptedTool(name="refuse", behaviour=refuse))
    assert (await execute_server_tool("refuse", {}, context=context)).result == {
        "error": "The portfolio is closed."
    }


@pytest.mark.parametrize(
    "returned",
    [
        {"not": "an outcome"},
        None,
        ToolOutcome(result={"symbols": {"NVDA", "MSFT"}}),
        ToolOutcome(result={"ratio": float("nan")}),
    ],
    ids=["dict", "none", "set-inside", "nan-inside"],
)
async def test_a_result_that_cannot_be_shown_is_an_error_outcome(context, register_tool, returned):
    async def give(arguments: dict[str, Any], ctx: ToolContext) -> Any:
        return returned

    register_tool(ScriptedTool(name="give", behaviour=give))
    assert_error(await execute_server_tool("give", {}, context=context), "give")


async def test_a_slow_tool_is_stopped_at_the_timeout(context, register_tool, settings):
    settings.NEXUS_TOOLS_TIMEOUT = 0.3
    finished = asyncio.Event()

    async def dawdle(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        await asyncio.sleep(10)
        finished.set()
        return ToolOutcome(result="late")

    register_tool(ScriptedTool(name="dawdle", behaviour=dawdle))
    outcome = await execute_server_tool("dawdle", {}, context=context)
    assert_error(outcome, "longer than 0.3 s")  # not the 10 s tool's "late"
    assert not finished.is_set()


async def test_a_tools_own_timeout_error_is_a_plain_failure(context, register_tool, settings):
    settings.NEXUS_TOOLS_TIMEOUT = 30

    async def socket_timeout(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        raise TimeoutError("upstream at 10.0.0.9 timed out")

    register_tool(ScriptedTool(name="socket_timeout", behaviour=socket_timeout))
    message = assert_error(await execute_server_tool("socket_timeout", {}, context=context), "failed")
    assert "10.0.0.9" not in message


async def test_cancelling_the_caller_still_cancels_the_tool(context, register_tool):
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def wait_forever(arguments: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return ToolOutcome(result=None)

    register_tool(ScriptedTool(name="wait_forever", behaviour=wait_forever))
    task = asyncio.create_task(execute_server_tool("wait_forever", {}, context=context))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
