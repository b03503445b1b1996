"""Tool calls inside runs: server tools executed and stored, client tools answered over sockets."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_conversation
from tests.realtime import scripted

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


def _agent(tools, calls):
    from agents.models import Agent
    from agents.tools import builtin_tool_spec

    specs = [builtin_tool_spec(t) if isinstance(t, str) else t for t in tools]
    return Agent.objects.create(
        name="Tooly",
        provider="scripted",
        model="m",
        tools=specs,
        config={"tool_calls": calls, "echo_tool_result": True, "chunks": 3},
    )


def _messages(conversation_id, kind):
    from conversations.models import Message

    return list(Message.objects.filter(conversation_id=conversation_id, type=kind).order_by("seq"))


async def test_a_server_tool_runs_and_its_call_and_result_are_stored_and_shown(
    connect, user, settings, tmp_path
):
    from agents.demo_data import demo_data_ensure

    await database_sync_to_async(demo_data_ensure)()
    sql = "SELECT p.name, COUNT(h.id) AS n FROM portfolios p JOIN holdings h ON h.portfolio_id = p.id GROUP BY p.name ORDER BY p.name"
    agent = await database_sync_to_async(_agent)(
        ["query_database"], [{"name": "query_database", "arguments": {"sql": sql}}]
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "How many holdings per portfolio?"}})
    call = await client.until("tool_call")
    assert call["data"]["tool"] == "query_database" and call["data"]["execution"] == "server"
    result = await client.until("tool_result")
    assert result["data"]["is_error"] is False
    assert result["data"]["result"]["rows"] == [["Balanced", 3], ["Growth", 3], ["Income", 3]]
    final = await client.until("agent_message")
    assert final["data"]["content"].startswith("Tool said: ")
    assert '"Balanced"' in final["data"]["content"]
    await client.until("run_finished", status="completed")
    stored_calls = await database_sync_to_async(_messages)(conversation.pk, "tool_call")
    stored_results = await database_sync_to_async(_messages)(conversation.pk, "tool_result")
    assert len(stored_calls) == 1 and len(stored_results) == 1
    assert stored_calls[0].seq == call["seq"] and stored_results[0].seq == result["seq"]
    # The model's second round saw the tool result in its own format.
    second_round = scripted.SEEN[1]
    assert second_round[-1].role == "tool" and second_round[-1].tool_call_id == call["data"]["toolCallId"]


async def test_a_refused_write_comes_back_as_an_error_result_not_a_failed_run(connect, user):
    agent = await database_sync_to_async(_agent)(
        ["query_database"], [{"name": "query_database", "arguments": {"sql": "DELETE FROM holdings"}}]
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Delete everything."}})
    result = await client.until("tool_result")
    assert result["data"]["is_error"] is True
    await client.until("run_finished", status="completed")


CLIENT_TOOL = {
    "name": "browser_timezone",
    "description": "The user's time zone.",
    "parameters": {"type": "object", "properties": {}},
    "execution": "client",
}


async def test_a_client_tool_round_trip_with_two_sockets_first_result_wins(connect, user):
    agent = await database_sync_to_async(_agent)(
        [CLIENT_TOOL], [{"name": "browser_timezone", "arguments": {}}]
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    tab1 = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    tab2 = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await tab1.until("session_state")
    await tab2.until("session_state")
    await tab1.send({"type": "user_message", "data": {"content": "What time zone am I in?"}})
    call1 = await tab1.until("tool_call")
    call2 = await tab2.until("tool_call")
    assert (
        call1["data"]["execution"] == "client" and call1["data"]["toolCallId"] == call2["data"]["toolCallId"]
    )
    call_id = call1["data"]["toolCallId"]
    await tab2.send({"type": "tool_result", "data": {"toolCallId": call_id, "result": "Europe/Paris"}})
    assert (await tab2.until("ack"))["data"]["toolCallId"] == call_id
    await tab1.send({"type": "tool_result", "data": {"toolCallId": call_id, "result": "Asia/Tokyo"}})
    assert (await tab1.until("error"))["data"]["code"] == "conflict"
    final = await tab1.until("agent_message")
    assert final["data"]["content"] == 'Tool said: {"result": "Europe/Paris", "is_error": false}'
    await tab2.until("run_finished", status="completed")


async def test_a_client_tool_with_no_answer_times_out_into_an_error_result(connect, user, settings):
    settings.NEXUS_CLIENT_TOOL_TIMEOUT = 0.5
    agent = await database_sync_to_async(_agent)(
        [CLIENT_TOOL], [{"name": "browser_timezone", "arguments": {}}]
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Time zone?"}})
    await client.until("tool_call")
    result = await client.until("tool_result")
    assert result["data"]["is_error"] is True and "did not answer" in json.dumps(result["data"]["result"])
    await client.until("run_finished", status="completed")


async def test_a_waiting_tool_call_is_replayed_to_a_reconnected_socket(connect, user):
    agent = await database_sync_to_async(_agent)(
        [CLIENT_TOOL], [{"name": "browser_timezone", "arguments": {}}]
    )
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    first = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    state = await first.until("session_state")
    await first.send({"type": "user_message", "data": {"content": "Time zone?"}})
    call = await first.until("tool_call")
    await first.close()
    await asyncio.sleep(0.2)
    again = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    fresh_state = await again.until("session_state")
    assert [p["toolCallId"] for p in fresh_state["data"]["pending_tool_calls"]] == [
        call["data"]["toolCallId"]
    ]
    await again.close()
    resumed = await connect(
        f"/ws/conversations/{conversation.pk}/?last_seq={state['data']['last_seq']}", user=user
    )
    replayed = await resumed.until("tool_call")
    assert replayed["seq"] == call["seq"]
    await resumed.send(
        {"type": "tool_result", "data": {"toolCallId": call["data"]["toolCallId"], "result": "UTC"}}
    )
    await resumed.until("run_finished", status="completed")
