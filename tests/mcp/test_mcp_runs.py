"""An agent calls an MCP server's tool in a run and answers with the result: over Streamable HTTP
(a real MCP server on a free loopback port) and over stdio (the operator's command); a server on
a private address not in NEXUS_EGRESS_ALLOW is refused; a stop during a slow MCP tool cancels it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_conversation
from tests.fakes.script import FakeToolCall, Reply
from tests.mcp.conftest import STDIO_COMMAND, mcp_http_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90), pytest.mark.slow]


def _server(**fields: Any):
    from agents.mcp import mcp_server_create

    return mcp_server_create(owner=fields.pop("owner", None), by_staff=True, **fields)


def _agent(tools: list[dict[str, Any]], *, owner=None):
    from agents.services import agent_create

    return agent_create(owner=owner, name="Tooly", provider="openai", model="fake-model", tools=tools)


def _mcp(server, tool: str) -> dict[str, Any]:
    return {"execution": "mcp", "server": str(server.pk), "tool": tool}


def _tool_answers(fake) -> list[dict[str, Any]]:
    return [m for r in fake.requests for m in r.json["messages"] if m["role"] == "tool"]


async def _ask(connect, user, agent, fake, call: FakeToolCall, final: str = "Done."):
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake.script(Reply(text="", tool_calls=(call,)), Reply(text=final))
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Use the tool."}})
    call_frame = await client.until("tool_call", timeout=30)
    assert call_frame["data"]["execution"] == "server"  # an MCP tool runs on the server's side
    result = await client.until("tool_result", timeout=30)
    message = await client.until("agent_message", timeout=30)
    await client.until("run_finished", timeout=30)
    return result, message


async def test_an_agent_calls_a_streamable_http_mcp_tool_and_answers_with_its_result(
    connect, user, fake_openai, mcp_http
):
    server = await database_sync_to_async(_server)(name="calc", url=mcp_http.url)
    agent = await database_sync_to_async(_agent)([_mcp(server, "add")])
    result, message = await _ask(
        connect, user, agent, fake_openai, FakeToolCall(name="calc__add", arguments={"a": 20, "b": 22}), "42."
    )
    assert result["data"]["is_error"] is False
    assert result["data"]["result"] == {"text": "42", "structured": {"result": 42}}
    assert message["data"]["content"] == "42."
    # The model was offered the tool with the server's own description and schema...
    offered = {t["function"]["name"]: t["function"] for t in fake_openai.requests[0].json["tools"]}
    assert offered["calc__add"]["description"] == "Add two integers."
    assert offered["calc__add"]["parameters"]["required"] == ["a", "b"]
    # ... and its answer carried the server's result back.
    [answer] = _tool_answers(fake_openai)
    assert json.loads(answer["content"])["result"]["text"] == "42"
    # The tool list was fetched (the first run found none cached) and cached on the server's row.
    await database_sync_to_async(server.refresh_from_db)()
    assert {t["name"] for t in server.tools_cache} == {"add", "shout", "broken", "slow"}
    assert server.tools_fetched_at is not None and server.last_error == ""


async def test_an_operator_stdio_mcp_tool_runs(connect, user, fake_openai):
    command, args = STDIO_COMMAND
    server = await database_sync_to_async(_server)(
        name="local", transport="stdio", command=command, args=args
    )
    agent = await database_sync_to_async(_agent)([_mcp(server, "shout")])
    result, _ = await _ask(
        connect, user, agent, fake_openai, FakeToolCall(name="local__shout", arguments={"text": "hello"})
    )
    assert result["data"]["is_error"] is False
    assert result["data"]["result"]["text"] == "HELLO!"
    assert "HELLO!" in _tool_answers(fake_openai)[0]["content"]


async def test_a_tool_error_comes_back_as_an_error_result(connect, user, fake_openai, mcp_http):
    server = await database_sync_to_async(_server)(name="calc", url=mcp_http.url)
    agent = await database_sync_to_async(_agent)([_mcp(server, "broken")])
    result, _ = await _ask(connect, user, agent, fake_openai, FakeToolCall(name="calc__broken", arguments={}))
    assert result["data"]["is_error"] is True
    assert result["data"]["result"] == {"error": "Error executing tool broken: the broken tool broke"}


async def test_the_credential_travels_in_its_header_and_a_wrong_one_fails_cleanly(
    connect, user, fake_openai, tmp_path
):
    marker_dir = tmp_path / "m"
    marker_dir.mkdir()
    with mcp_http_server(marker_dir, token="t0ken") as process:
        good = await database_sync_to_async(_server)(name="good", url=process.url, credential="Bearer t0ken")
        bad = await database_sync_to_async(_server)(name="bad", url=process.url, credential="Bearer nope")
        agent = await database_sync_to_async(_agent)([_mcp(good, "add"), _mcp(bad, "add")])
        await database_sync_to_async(good.refresh_from_db)()
        assert "t0ken" not in good.credential_encrypted  # stored encrypted
        result, _ = await _ask(
            connect, user, agent, fake_openai, FakeToolCall(name="good__add", arguments={"a": 1, "b": 2})
        )
        assert result["data"]["result"]["text"] == "3"
    # The bad server's tool list could not be fetched (401): its tool was left out of the run, and
    # why is stored for the operator.
    offered = {t["function"]["name"] for t in fake_openai.requests[0].json["tools"]}
    assert offered == {"good__add"}
    await database_sync_to_async(bad.refresh_from_db)()
    assert bad.last_error and "nope" not in bad.last_error


async def test_a_server_on_a_private_address_not_allowed_is_refused(
    connect, user, fake_openai, mcp_http, settings
):
    server = await database_sync_to_async(_server)(name="calc", url=mcp_http.url)
    agent = await database_sync_to_async(_agent)([_mcp(server, "add")])
    # Allowed once to fill the tool cache (an operator's earlier setting), then not any more.
    from agents.tools.mcp import mcp_refresh_tools

    await mcp_refresh_tools(server)
    seen_before = len(mcp_http.requests())
    settings.NEXUS_EGRESS_ALLOW = []  # the fake provider is still allowed (OPENAI_BASE_URL is)
    result, _ = await _ask(
        connect, user, agent, fake_openai, FakeToolCall(name="calc__add", arguments={"a": 1, "b": 2})
    )
    assert result["data"]["is_error"] is True
    assert "egress policy" in result["data"]["result"]["error"]
    assert "127.0.0.1" not in result["data"]["result"]["error"]  # no address shown to the model
    assert len(mcp_http.requests()) == seen_before  # nothing reached the server
    await database_sync_to_async(server.refresh_from_db)()
    assert "egress policy" in server.last_error and "loopback" in server.last_error


async def _wait_for(path, seconds: float = 20.0) -> bool:
    for _ in range(int(seconds / 0.05)):
        if path.exists():
            return True
        await asyncio.sleep(0.05)
    return path.exists()


@pytest.mark.parametrize("transport", ["http", "stdio"])
async def test_stop_during_a_slow_mcp_tool_cancels_it(connect, user, fake_openai, mcp_http, transport):
    if transport == "http":
        server = await database_sync_to_async(_server)(name="sleepy", url=mcp_http.url)
    else:
        command, args = STDIO_COMMAND
        server = await database_sync_to_async(_server)(
            name="sleepy",
            transport="stdio",
            command=command,
            args=[*args, "--marker-dir", str(mcp_http.marker_dir)],
        )
    agent = await database_sync_to_async(_agent)([_mcp(server, "slow")])
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    fake_openai.script(
        Reply(text="", tool_calls=(FakeToolCall(name="sleepy__slow", arguments={"seconds": 30}),))
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Take your time."}})
    await client.until("tool_call", timeout=30)
    assert await _wait_for(mcp_http.marker_dir / "slow-started")
    loop = asyncio.get_running_loop()
    stopped_at = loop.time()
    await client.send({"type": "stop"})
    finished = await client.until("run_finished", timeout=25)
    took = loop.time() - stopped_at
    assert finished["data"]["status"] == "stopped"
    # No clock in the assertion: the tool sleeps 30 s, and the server saw its call cancelled (the
    # sleep interrupted), so the stop cancelled the call itself, not merely stopped waiting.
    assert await _wait_for(mcp_http.marker_dir / "slow-cancelled")
    print(f"stop -> run_finished during a slow MCP tool ({transport}): {took * 1000:.0f} ms")
    assert len(fake_openai.requests) == 1  # the model was not asked again
