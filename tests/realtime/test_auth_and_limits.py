"""Authentication forms, origin rules, close codes and limits of the WebSocket endpoints."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from tests.realtime.conftest import Client, make_agent, make_conversation, token_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


@pytest.fixture
def conversation(user):
    return make_conversation(user, make_agent(reply="ok", chunks=1))


async def _raw(application, path, *, headers=None, subprotocols=None) -> Client:
    client = Client(
        WebsocketCommunicator(application, path, headers=headers or [], subprotocols=subprotocols)
    )
    connected, _ = await client.connect()
    assert connected  # every refusal accepts first, so the close code reaches browsers
    return client


async def test_no_credentials_is_closed_4003_after_an_error_frame(application, conversation):
    client = await _raw(application, f"/ws/conversations/{conversation.pk}/")
    assert await client.closed() == 4003
    assert client.frames[-1]["type"] == "error"


async def test_a_bad_token_is_closed_4003(application, conversation):
    client = await _raw(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"authorization", b"Bearer nope")]
    )
    assert await client.closed() == 4003


async def test_another_users_conversation_is_closed_4001(connect, other_user, conversation):
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=other_user)
    assert await client.closed() == 4001


async def test_an_unknown_conversation_is_closed_4001(connect, user):
    client = await connect("/ws/conversations/00000000-0000-0000-0000-000000000000/", user=user)
    assert await client.closed() == 4001


async def test_subprotocol_auth_accepts_the_nexus_subprotocol(application, user, conversation):
    token = await database_sync_to_async(token_for)(user)
    client = Client(
        WebsocketCommunicator(
            application, f"/ws/conversations/{conversation.pk}/", subprotocols=["nexus", f"bearer.{token}"]
        )
    )
    connected, subprotocol = await client.connect()
    assert connected and subprotocol == "nexus"
    assert (await client.recv())["type"] == "connection"
    await client.close()


async def test_query_token_works_and_can_be_switched_off(application, user, conversation, settings):
    token = await database_sync_to_async(token_for)(user)
    client = await _raw(application, f"/ws/conversations/{conversation.pk}/?token={token}")
    assert (await client.recv())["type"] == "connection"
    await client.close()
    settings.NEXUS_WS_ALLOW_QUERY_TOKEN = False
    client = await _raw(application, f"/ws/conversations/{conversation.pk}/?token={token}")
    assert await client.closed() == 4003


async def test_a_ticket_is_single_use(application, user, conversation):
    from core.auth import ws_ticket_issue

    ticket = await database_sync_to_async(ws_ticket_issue)(user)
    client = await _raw(application, f"/ws/conversations/{conversation.pk}/?ticket={ticket}")
    assert (await client.recv())["type"] == "connection"
    await client.close()
    again = await _raw(application, f"/ws/conversations/{conversation.pk}/?ticket={ticket}")
    assert await again.closed() == 4003


async def test_cookie_auth_needs_an_allowed_origin(application, client, user, conversation, settings):
    await database_sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    settings.NEXUS_ALLOWED_ORIGINS = ["http://good.example"]
    ok = await _raw(
        application,
        f"/ws/conversations/{conversation.pk}/",
        headers=[(b"cookie", cookie), (b"origin", b"http://good.example")],
    )
    assert (await ok.recv())["type"] == "connection"
    await ok.close()
    bad_origin = await _raw(
        application,
        f"/ws/conversations/{conversation.pk}/",
        headers=[(b"cookie", cookie), (b"origin", b"http://evil.example")],
    )
    assert await bad_origin.closed() == 4003
    no_origin = await _raw(
        application, f"/ws/conversations/{conversation.pk}/", headers=[(b"cookie", cookie)]
    )
    assert await no_origin.closed() == 4003


async def test_the_sixth_socket_is_closed_4004(connect, user, conversation, settings):
    sockets = [await connect(f"/ws/conversations/{conversation.pk}/", user=user) for _ in range(5)]
    for socket in sockets:
        assert (await socket.recv())["type"] == "connection"
    sixth = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert await sixth.closed() == 4004
    await sockets[0].close()
    replacement = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert (await replacement.recv())["type"] == "connection"


async def test_past_the_message_rate_an_error_then_4004(connect, user, conversation, settings):
    settings.NEXUS_WS_MESSAGES_PER_MINUTE = 3
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    for _ in range(3):
        await client.send({"type": "feedback", "data": {"messageId": "00000000-0000-0000-0000-000000000000"}})
    await client.send({"type": "ping"})  # pings are not counted
    assert (await client.until("pong"))["type"] == "pong"
    await client.send({"type": "feedback", "data": {"messageId": "x"}})
    error = await client.until("error", code="rate_limited")
    assert error["data"]["retry_after"] > 0
    for _ in range(12):
        await client.send({"type": "feedback", "data": {"messageId": "x"}})
    assert await client.closed() == 4004


async def test_a_frame_over_the_limit_is_closed_4009(connect, user, conversation, settings):
    settings.NEXUS_WS_MAX_MESSAGE_BYTES = 2048
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "x" * 5000}})
    assert await client.closed() == 4009
    assert any(f.get("data", {}).get("code") == "message_too_large" for f in client.frames)


async def test_connection_max_age_closes_4002(connect, user, conversation, settings):
    settings.NEXUS_WS_MAX_AGE_SECONDS = 1
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert await client.closed(timeout=5) == 4002


async def test_silence_after_a_server_ping_closes_4002(connect, user, conversation, settings):
    settings.NEXUS_WS_PING_INTERVAL = 0.3
    settings.NEXUS_WS_PONG_TIMEOUT = 0.3
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert await client.closed(timeout=5) == 4002
    assert any(f["type"] == "ping" for f in client.frames)


async def test_answering_pings_keeps_the_socket_open(connect, user, conversation, settings):
    settings.NEXUS_WS_PING_INTERVAL = 0.3
    settings.NEXUS_WS_PONG_TIMEOUT = 0.5
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    loop = asyncio.get_running_loop()
    end = loop.time() + 2
    while loop.time() < end:
        frame = await client.recv(timeout=3)
        if frame["type"] == "ping":
            await client.send({"type": "pong"})
    await client.send({"type": "ping"})
    assert (await client.until("pong"))["type"] == "pong"
    await client.close()


async def test_an_expired_conversation_opens_with_its_history_and_a_message_revives_it(
    connect, user, conversation
):
    from django.utils import timezone

    from conversations.models import Conversation, Message

    first = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await first.until("session_state")
    await first.send({"type": "user_message", "data": {"content": "before the break"}})
    await first.until("run_finished")
    await first.close()
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(
        status="expired", expires_at=timezone.now()
    )

    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    state = (await client.until("session_state"))["data"]
    assert state["status"] == "expired"
    assert [m["content"] for m in state["messages"]] == ["before the break", "ok"]
    await client.send({"type": "user_message", "data": {"content": "I am back", "client_message_id": "b1"}})
    ack = await client.until("ack")
    assert ack["data"]["run_id"]
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "completed"

    revived = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert revived.status == "active"
    assert revived.expires_at > timezone.now()
    contents = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation=conversation).values_list("content", flat=True))
    )()
    assert contents == ["before the break", "ok", "I am back", "ok"]
    await client.close()


async def test_the_agent_endpoint_needs_initialize_first(connect, user, conversation):
    client = await connect("/ws/agent/", user=user)
    assert (await client.recv())["type"] == "connection"
    await client.send({"type": "user_message", "data": {"content": "hi"}})
    assert (await client.until("error"))["data"]["code"] == "validation_error"
    await client.send({"type": "initialize", "data": {"sessionId": str(conversation.pk)}})
    state = await client.until("session_state")
    assert state["data"]["conversation"]["id"] == str(conversation.pk)
    await client.send({"type": "user_message", "data": {"content": "hi"}})
    await client.until("run_finished")
    await client.close()


async def test_stats_is_for_staff_only(connect, user, staff_user):
    client = await connect("/ws/stats/", user=user)
    assert await client.closed() == 4003
    staff = await connect("/ws/stats/", user=staff_user)
    assert (await staff.recv())["type"] == "connection"
    stats = await staff.until("stats")
    assert "sockets_total" in str(stats["data"]) or "error" not in stats["data"]
    await staff.close()


async def test_the_events_monitor_renders_neural_events_of_own_conversations(
    connect, user, other_user, conversation
):
    monitor = await connect("/ws/events/", user=user)
    outsider = await connect("/ws/events/", user=other_user)
    assert (await monitor.recv())["type"] == "connection"
    assert (await outsider.recv())["type"] == "connection"
    chat = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await chat.send({"type": "user_message", "data": {"content": "hello"}})
    await chat.until("run_finished")
    complete = await monitor.until("neural-event")
    while complete["kind"] != "agent-response-complete":
        complete = await monitor.recv()
    assert complete["data"]["response"] == "ok"
    assert complete["data"]["agentName"] == "Scripted"
    assert await outsider.ws.receive_nothing(timeout=0.5)
    for socket in (monitor, outsider, chat):
        await socket.close()
