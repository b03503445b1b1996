"""The conversation socket, in process, through the real ASGI application (SPEC sections 4, 5)."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from tests.realtime import scripted
from tests.realtime.conftest import make_agent, make_conversation
from tests.waiting import engine_quiet

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


@pytest.fixture
def conversation(user):
    agent = make_agent(reply="The answer is four.", chunks=6)
    return make_conversation(user, agent)


def _message(pk):
    from conversations.models import Message

    return Message.objects.get(pk=pk)


async def test_a_message_streams_a_reply_that_equals_the_stored_one(connect, user, conversation):
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert (await client.recv())["type"] == "connection"
    state = await client.until("session_state")
    assert state["data"]["conversation"]["id"] == str(conversation.pk)
    await client.send(
        {"type": "user_message", "data": {"content": "What is 2+2?", "client_message_id": "c1"}}
    )
    ack = await client.until("ack")
    assert ack["data"]["client_message_id"] == "c1"
    started = await client.until("run_started")
    chunks = []
    while True:
        frame = await client.recv()
        if frame["type"] == "streaming_chunk":
            chunks.append(frame)
        if frame["type"] == "agent_message":
            final = frame
        if frame["type"] == "run_finished":
            finished = frame
            break
    text = "".join(c["data"]["chunk"] for c in chunks)
    assert text == "The answer is four." == final["data"]["content"]
    assert chunks[-1]["data"]["isDone"] is True
    assert finished["data"]["status"] == "completed"
    seqs = [f["seq"] for f in client.frames if "seq" in f]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    stored = await database_sync_to_async(_message)(started["data"]["message_id"])
    assert stored.content == text and stored.status == "complete"
    assert stored.metadata["provider"] == "scripted" and stored.metadata["finish_reason"] == "stop"
    await client.close()


async def test_stop_keeps_the_partial_reply_as_stopped(connect, user):
    agent = await database_sync_to_async(make_agent)(reply="x" * 400, chunks=400, delay=0.01)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Go"}})
    started = await client.until("run_started")
    await client.until("streaming_chunk")
    await client.send({"type": "stop"})
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "stopped"
    # No clock: the reply would take 4 s; the provider's stream was closed and the stored text is
    # cut short of it (below), so the stop ended the run, not the reply's end.
    assert scripted.CLOSED
    stored = await database_sync_to_async(_message)(started["data"]["message_id"])
    assert stored.status == "stopped"
    assert 0 < len(stored.content) < 400
    await client.close()


async def test_resume_replays_exactly_the_missed_events(connect, user, conversation):
    first = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await first.send({"type": "user_message", "data": {"content": "Hi"}})
    await first.until("run_finished")
    seqs = [f["seq"] for f in first.frames if "seq" in f]
    await first.close()
    second = await connect(f"/ws/conversations/{conversation.pk}/?last_seq={seqs[2]}", user=user)
    replayed = []
    while len(replayed) < len(seqs) - 3:
        frame = await second.recv()
        if "seq" in frame:
            replayed.append(frame["seq"])
    assert replayed == seqs[3:]
    # A position below what this socket already sent replays nothing twice: the next events
    # continue right after the highest seq it sent.
    await second.send({"type": "resume", "data": {"last_seq": seqs[-2]}})
    await second.send({"type": "user_message", "data": {"content": "Again"}})
    await second.until("run_finished")
    after = [f["seq"] for f in second.frames if "seq" in f]
    assert after == list(range(seqs[3], after[-1] + 1))
    await second.close()


async def test_a_socket_bound_at_connect_replays_from_an_earlier_position_asked_before_it_sent_anything(
    connect, user, conversation
):
    first = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await first.send({"type": "user_message", "data": {"content": "Hi"}})
    await first.until("run_finished")
    seqs = [f["seq"] for f in first.frames if "seq" in f]
    await first.close()
    # Bound at connect with nothing to send yet: the position may still move below its state.
    second = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    assert (await second.until("session_state"))["data"]["last_seq"] == seqs[-1]
    await second.send(
        {"type": "initialize", "data": {"conversation_id": str(conversation.pk), "last_seq": seqs[1]}}
    )
    await second.until("session_state")
    replayed = [(await second.recv())["seq"] for _ in seqs[2:]]
    assert replayed == seqs[2:]
    await second.close()


async def test_a_position_below_what_the_socket_sent_gets_a_resync_and_nothing_twice(connect, user):
    agent = await database_sync_to_async(make_agent)(reply="y" * 300, chunks=300, delay=0.005)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    first = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await first.send({"type": "user_message", "data": {"content": "One"}})
    await first.until("run_finished")
    await first.close()
    # Bound at connect, this socket delivers from its session_state on; once it sent an event,
    # the events before that state can no longer come after it.
    second = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    bound_at = (await second.until("session_state"))["data"]["last_seq"]
    await second.send({"type": "user_message", "data": {"content": "Two"}})
    run_id = (await second.until("ack"))["data"]["run_id"]
    await second.until("streaming_chunk")
    await second.send({"type": "resume", "data": {"last_seq": 2}})
    info = await second.until("info")
    assert info["data"]["code"] == "resync"
    sent = [f["seq"] for f in second.frames if "seq" in f]
    assert sent == list(range(bound_at + 1, sent[-1] + 1))
    state = (await second.until("session_state"))["data"]
    await second.until("run_finished", run_id=run_id)
    after = [f["seq"] for f in second.frames if "seq" in f][len(sent) :]
    start = max(state["last_seq"], sent[-1])
    assert after == list(range(start + 1, start + 1 + len(after)))
    await second.close()


async def test_the_same_client_message_id_twice_gives_one_message_and_one_run(connect, user, conversation):
    from conversations.models import Message
    from runs.models import Run

    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    for _ in range(2):
        await client.send({"type": "user_message", "data": {"content": "Once", "client_message_id": "same"}})
    first = await client.until("ack")
    second = await client.until("ack")
    assert first["data"]["message_id"] == second["data"]["message_id"]
    assert second["data"]["duplicate"] is True
    await client.until("run_finished")
    await engine_quiet()  # a second run, had the duplicate started one, would be in flight or done
    count = await database_sync_to_async(
        lambda: (Message.objects.filter(role="user").count(), Run.objects.count())
    )()
    assert count == (1, 1)
    await client.close()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ('{"type": "dance"}', "unknown_type"),
        ('{"data": {}}', "validation_error"),
        ('{"type": "user_message", "data": {"content": 5}}', "validation_error"),
        ('{"type": "user_message", "data": {"content": "   "}}', "validation_error"),
        ('{"type": "resume", "data": {"last_seq": -1}}', "validation_error"),
        ('{"type": "feedback", "data": {"messageId": "x", "rating": "meh"}}', "validation_error"),
        ('{"type": "tool_result", "data": {"toolCallId": "nope", "result": 1}}', "not_found"),
        (
            '{"type": "feedback", "data": {"messageId": "00000000-0000-0000-0000-000000000000", "rating": "positive"}}',
            "not_found",
        ),
    ],
)
async def test_bad_frames_get_a_coded_error_and_the_socket_stays(connect, user, conversation, raw, code):
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send(raw)
    error = await client.until("error")
    assert error["data"]["code"] == code
    await client.send({"type": "ping"})
    assert (await client.until("pong"))["type"] == "pong"
    await client.close()


async def test_a_binary_frame_is_refused_with_an_error(connect, user, conversation):
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.ws.send_to(bytes_data=b"\x00\x01")
    assert (await client.until("error"))["data"]["code"] == "invalid_json"
    await client.close()


async def test_seed_aliases_text_and_query_start_runs(connect, user, conversation):
    # the aliases on the native socket (/ws/{id} speaks seed 001's frames: tests/dialects)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    for frame, content in (
        ({"type": "text", "content": "Hello AI!", "timestamp": "2024-01-01T00:00:00Z"}, "Hello AI!"),
        ({"type": "query", "data": {"query": "And again"}}, "And again"),
    ):
        await client.send(frame)
        await client.until("ack")
        reply = await client.until("agent_message")
        finished = await client.until("run_finished")
        assert finished["data"]["status"] == "completed"
        assert reply["data"]["content"] == "The answer is four."
        # The alias carried the user's words to the provider as the last user message.
        assert [m.content for m in scripted.SEEN[-1] if m.role == "user"][-1] == content
    assert len(scripted.SEEN) == 2
    await client.close()


def _refuse_runs(on: bool, event: str = "INSERT") -> None:
    """A database trigger that fails every ``event`` (INSERT, UPDATE) on runs: the start of a run
    fails after the run was launched (the provider is asked before the run's row is written inline,
    and before the claim's UPDATE on workers)."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            if on:
                cursor.execute(
                    "CREATE FUNCTION nexus_test_refuse_run() RETURNS trigger AS $$ BEGIN "
                    "RAISE EXCEPTION 'refused by the test'; END; $$ LANGUAGE plpgsql"
                )
                cursor.execute(
                    f"CREATE TRIGGER nexus_test_refuse_run BEFORE {event} ON conversations_run "
                    "FOR EACH ROW EXECUTE FUNCTION nexus_test_refuse_run()"
                )
            else:
                cursor.execute("DROP TRIGGER IF EXISTS nexus_test_refuse_run ON conversations_run")
                cursor.execute("DROP FUNCTION IF EXISTS nexus_test_refuse_run()")
        elif on:
            cursor.execute(
                f"CREATE TRIGGER nexus_test_refuse_run BEFORE {event} ON conversations_run "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            cursor.execute("DROP TRIGGER IF EXISTS nexus_test_refuse_run")


async def test_a_send_that_fails_after_its_run_was_launched_leaves_nothing(connect, user):
    from conversations.models import Message
    from runs.eventlog import get_event_log
    from runs.manager import get_run_manager
    from runs.models import Run

    agent = await database_sync_to_async(make_agent)(reply="y" * 200, chunks=200, delay=0.01)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await database_sync_to_async(_refuse_runs)(True)
    try:
        await client.send({"type": "user_message", "data": {"content": "Doomed"}})
        error = await client.until("error")
        assert error["data"]["code"] == "internal"
        await engine_quiet()  # an abandoned run, had it gone on, would have logged its events by now
        assert [f["type"] for f in client.frames if f["type"] in ("run_started", "streaming_chunk")] == []
        assert len(scripted.CLOSED) == len(scripted.SEEN)  # a provider stream it opened was closed
        assert get_run_manager().tasks == {}
        assert (await get_event_log().read_after(str(conversation.pk), 0)).events == []
        rows = await database_sync_to_async(
            lambda: (Message.objects.filter(conversation=conversation).count(), Run.objects.count())
        )()
        assert rows == (0, 0)
    finally:
        await database_sync_to_async(_refuse_runs)(False)
    # Nothing stuck: the next send is answered in full.
    await client.send({"type": "user_message", "data": {"content": "Again"}})
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "completed"
    await client.close()


async def test_a_message_pushes_the_idle_expiry_on(connect, user, conversation):
    from datetime import timedelta

    from django.utils import timezone

    from conversations.models import Conversation

    soon = timezone.now() + timedelta(minutes=1)
    await database_sync_to_async(Conversation.objects.filter(pk=conversation.pk).update)(expires_at=soon)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Still here"}})
    await client.until("run_finished")
    stored = await database_sync_to_async(Conversation.objects.get)(pk=conversation.pk)
    assert stored.expires_at > soon + timedelta(minutes=5)
    await client.close()


def _queued_run(conversation, agent, content):
    from conversations.models import Message
    from runs.models import Run

    message = Message.objects.create(conversation=conversation, role="user", content=content)
    run = Run.objects.create(conversation=conversation, agent=agent, trigger_message=message)
    return str(run.pk), str(message.pk)


async def test_a_run_started_while_it_is_claimed_holds_until_the_claim_and_vanishes_without_it(user):
    """Workers: a run its sender saw start at once asks its provider while the claim commits."""
    from conversations.models import Message
    from runs.dispatch import Handoff
    from runs.domain_events import UserMessage
    from runs.eventlog import get_event_log
    from runs.events import EventWriter
    from runs.manager import execute_run, get_run_manager
    from runs.models import Run

    agent = await database_sync_to_async(make_agent)(reply="Claimed and answered.", chunks=20, delay=0.02)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    manager = get_run_manager()
    await manager.ensure_started()
    log = get_event_log()

    run_id, message_id = await database_sync_to_async(_queued_run)(conversation, agent, "First")
    writer = EventWriter(log, str(conversation.pk), owner_id=user.pk, floor=0)
    seq = await writer.emit_now(
        UserMessage(message_id=message_id, content="First", client_message_id=None, user_id=user.pk)
    )
    await execute_run(manager, run_id, Handoff(trigger_seq=(message_id, seq), start=True))
    run = await database_sync_to_async(Run.objects.select_related("reply_message").get)(pk=run_id)
    assert run.status == "completed" and run.owner == manager.owner_name
    assert run.reply_message.content == "Claimed and answered."
    events = (await log.read_after(str(conversation.pk), 0)).events
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["user_message", "run_started"] and kinds[-1] == "run_finished"
    stored = await database_sync_to_async(Message.objects.get)(pk=message_id)
    assert stored.seq == seq  # stored with the reply's row

    await database_sync_to_async(_refuse_runs)(True, "UPDATE")
    try:
        run_id, _ = await database_sync_to_async(_queued_run)(conversation, agent, "Second")
        await asyncio.wait_for(execute_run(manager, run_id, Handoff(start=True)), 5)
    finally:
        await database_sync_to_async(_refuse_runs)(False, "UPDATE")
    assert len(scripted.CLOSED) == len(scripted.SEEN) - 1  # the second stream, if opened, was cut
    assert (await log.read_after(str(conversation.pk), events[-1].seq)).events == []
    run = await database_sync_to_async(Run.objects.get)(pk=run_id)
    assert (run.status, run.reply_message_id) == ("queued", None)
    assert manager.tasks == {}
