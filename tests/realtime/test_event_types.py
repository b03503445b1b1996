"""The faces act on a logged event by its type (close a socket on a ``system`` event
``session_expired`` or ``conversation_deleted``, end a stream at ``run_finished``), kept by
the log beside the payload (``LoggedEvent.kind``) and never by looking for the name anywhere in
the event's bytes: a tool result, a context or a reply may hold those names too."""

from __future__ import annotations

import orjson
import pytest
from channels.db import database_sync_to_async

from realtime import protocol
from runs.domain_events import (
    AgentMessage,
    ConversationEnded,
    Info,
    StreamingChunk,
    ToolResultGiven,
)
from runs.event_encoding import encode_event, encode_event_fitted, event
from runs.eventlog import get_event_log
from runs.eventlog.base import LoggedEvent
from runs.events import EventWriter
from tests.realtime.conftest import make_agent, make_conversation


def tool_result(result: object) -> ToolResultGiven:
    return ToolResultGiven(
        tool_call_id="t1", tool="lookup", result=result, is_error=False, agent_id="a", run_id="r"
    )


@pytest.mark.parametrize(
    "evt",
    [
        event(StreamingChunk(message_id="m", agent_id="a", chunk='"run_finished"')),
        event(tool_result({"conversation_deleted": True, "type": "session_expired"})),
        event(ConversationEnded.session_expired()),
        {"data": {"type": "run_finished"}, "type": "agent_message"},  # laid out otherwise: parsed whole
        {"type": 'odd\\"kind', "data": {}},  # an escaped quote: parsed whole, never cut at it
    ],
)
def test_the_kind_of_a_payload_logged_without_one_is_the_events_own_type(evt):
    payload = encode_event(evt)
    assert protocol.event_kind(payload) == evt["type"]
    assert protocol.event_fields(payload) == (evt["type"], evt["data"])


def logged(evt: dict) -> LoggedEvent:
    return LoggedEvent(1, encode_event(evt), evt["type"])


@pytest.mark.parametrize(
    ("evt", "ending"),
    [
        (event(ConversationEnded.session_expired()), "session_expired"),
        (event(ConversationEnded.conversation_deleted()), "conversation_deleted"),
        (event(ConversationEnded.session_completed()), None),
        (event(tool_result({"code": "conversation_deleted"})), None),
        (event(Info(code="session_expired", message="idle")), None),
    ],
)
def test_only_a_system_event_with_its_code_ends_a_conversation(evt, ending):
    assert protocol.conversation_ending(logged(evt)) == ending


def test_the_kind_of_a_fitted_megabyte_reply_is_read_from_its_start():
    reply = AgentMessage(
        message_id="m", agent_id="a", agent_name="A", content="x" * 2_000_000, status="complete", metadata={}
    )
    payload = encode_event_fitted(event(reply), 1 << 20)
    assert protocol.event_kind(payload) == "agent_message"
    assert orjson.loads(payload)["data"]["content_truncated"] is True


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_an_event_that_mentions_a_closing_type_leaves_the_socket_open(connect, user):
    agent = await database_sync_to_async(make_agent)(owner=user)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    writer = EventWriter(get_event_log(), str(conversation.pk), owner_id=user.pk, floor=0)
    result = {"code": "session_expired", "conversation_deleted": True, "note": '"session_expired"'}
    await writer.emit_now(tool_result(result))
    frame = await client.until("tool_result")
    assert frame["data"]["result"] == result
    await client.send({"type": "ping"})
    await client.until("pong")  # still open: a closed socket would end this read with its close

    await writer.emit_now(ConversationEnded.session_expired())
    await client.until("system", code="session_expired")
    assert await client.closed() == 4002
