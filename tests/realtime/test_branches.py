"""The message tree over the conversation socket: regenerate, edit, continue, select, their
errors, and the history each run's provider is given (the active path only)."""

from __future__ import annotations

import uuid

import pytest
from channels.db import database_sync_to_async

from tests.realtime import scripted
from tests.realtime.conftest import make_agent, make_conversation

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


def _messages(conversation_id, **filters):
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, **filters).order_by("seq", "created_at")
    )


def _visible(conversation_id):
    from conversations.models import Conversation
    from conversations.selectors import message_list

    return message_list(conversation=Conversation.objects.get(pk=conversation_id))


async def _exchange(client, content):
    await client.send({"type": "user_message", "data": {"content": content}})
    ack = await client.until("ack")
    finished = await client.until("run_finished")
    return ack["data"]["message_id"], finished["data"]["message_id"]


async def _open(connect, user, **config):
    agent = await database_sync_to_async(make_agent)(**{"reply": "Four.", "chunks": 2, **config})
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    return conversation, client


async def test_regenerate_stores_a_sibling_reply_and_sends_only_the_active_path(connect, user):
    conversation, client = await _open(connect, user)
    question, first = await _exchange(client, "What is 2+2?")
    await _exchange(client, "And 3+3?")
    scripted.SEEN.clear()

    await client.send({"type": "regenerate", "data": {"message_id": first}})
    branch = await client.until("branch")
    assert branch["data"]["action"] == "regenerate" and branch["data"]["message_id"] == first
    ack = await client.until("ack", action="regenerate")
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "completed"
    second = finished["data"]["message_id"]
    assert ack["data"]["run_id"] == finished["data"]["run_id"]

    # The provider saw the question only: not the first answer, nor the later exchange.
    [seen] = scripted.SEEN
    assert [(m.role, m.content) for m in seen if m.role != "system"] == [("user", "What is 2+2?")]
    replies = await database_sync_to_async(_messages)(conversation.pk, role="agent")
    by_id = {str(m.pk): m for m in replies}
    assert str(by_id[second].parent_id) == question == str(by_id[first].parent_id)
    visible = await database_sync_to_async(_visible)(conversation.pk)
    assert [str(m.pk) for m in visible] == [question, second]

    # Flip back: the old reply and the exchange after it are the active path again.
    await client.send({"type": "select", "data": {"message_id": first}})
    assert (await client.until("branch"))["data"]["action"] == "select"
    await client.until("ack", action="select")
    visible = await database_sync_to_async(_visible)(conversation.pk)
    assert [m.content for m in visible] == ["What is 2+2?", "Four.", "And 3+3?", "Four."]
    state_messages = await _state_messages(connect, user, conversation)
    assert state_messages[1]["sibling_ids"] == [first, second]
    assert state_messages[0]["sibling_ids"] == [question]


async def _state_messages(connect, user, conversation):
    other = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    state = await other.until("session_state")
    await other.close()
    return state["data"]["messages"]


async def test_edit_stores_a_sibling_message_and_answers_it(connect, user):
    conversation, client = await _open(connect, user)
    question, _ = await _exchange(client, "Tell me about cats.")
    scripted.SEEN.clear()
    await client.send(
        {
            "type": "edit",
            "data": {"message_id": question, "content": "Tell me about dogs.", "client_message_id": "e1"},
        }
    )
    assert (await client.until("branch"))["data"]["message_id"] == question
    sent = await client.until("user_message")
    assert sent["data"]["content"] == "Tell me about dogs."
    ack = await client.until("ack", action="edit")
    assert ack["data"]["edited_id"] == question and ack["data"]["client_message_id"] == "e1"
    await client.until("run_finished")
    [seen] = scripted.SEEN
    assert [m.content for m in seen if m.role != "system"] == ["Tell me about dogs."]
    users = await database_sync_to_async(_messages)(conversation.pk, role="user")
    assert [(m.content, m.selected, m.hidden) for m in users] == [
        ("Tell me about cats.", False, True),
        ("Tell me about dogs.", True, False),
    ]
    assert users[0].parent_id is None and users[1].parent_id is None  # both first messages


async def test_continue_asks_the_provider_to_go_on_from_the_cut_reply(connect, user):
    conversation, client = await _open(connect, user, reply="Once upon a", finish="length")
    _, cut = await _exchange(client, "A story.")
    scripted.SEEN.clear()
    await client.send({"type": "continue", "data": {"message_id": cut}})
    await client.until("ack", action="continue")
    finished = await client.until("run_finished")
    [seen] = scripted.SEEN
    assert (seen[-2].role, seen[-2].content) == ("assistant", "Once upon a")
    assert seen[-1].role == "user" and "Continue" in seen[-1].content
    replies = await database_sync_to_async(_messages)(conversation.pk, role="agent")
    assert str(replies[-1].pk) == finished["data"]["message_id"]
    assert str(replies[-1].parent_id) == cut


async def test_bad_branch_requests_get_clear_errors(connect, user, other_user):
    _, client = await _open(connect, user, reply="Done.")
    question, reply = await _exchange(client, "Hi")
    cases = [
        ({"type": "regenerate", "data": {}}, "validation_error"),
        ({"type": "regenerate", "data": {"message_id": "nope"}}, "not_found"),  # as every id
        ({"type": "regenerate", "data": {"message_id": str(uuid.uuid4())}}, "not_found"),
        ({"type": "regenerate", "data": {"message_id": question}}, "validation_error"),  # not a reply
        ({"type": "continue", "data": {"message_id": reply}}, "validation_error"),  # not cut
        ({"type": "edit", "data": {"message_id": reply, "content": "x"}}, "validation_error"),  # not yours
        ({"type": "edit", "data": {"message_id": question, "content": "  "}}, "validation_error"),
        ({"type": "select", "data": {"message_id": str(uuid.uuid4())}}, "not_found"),
    ]
    for frame, code in cases:
        await client.send(frame)
        error = await client.until("error")
        assert error["data"]["code"] == code, (frame, error)

    # Another person's message, by id, from this person's conversation: not found.
    agent = await database_sync_to_async(make_agent)(reply="Theirs.")
    theirs = await database_sync_to_async(make_conversation)(other_user, agent)
    other = await connect(f"/ws/conversations/{theirs.pk}/", user=other_user)
    await other.until("session_state")
    _, their_reply = await _exchange(other, "Private")
    await client.send({"type": "regenerate", "data": {"message_id": their_reply}})
    assert (await client.until("error"))["data"]["code"] == "not_found"


async def test_nothing_branches_while_a_reply_is_being_generated(connect, user):
    _, client = await _open(connect, user, reply="slow " * 50, chunks=50, delay=0.02)
    question, reply = await _exchange(client, "First")
    await client.send({"type": "user_message", "data": {"content": "Second"}})
    await client.until("run_started")
    for frame in (
        {"type": "regenerate", "data": {"message_id": reply}},
        {"type": "edit", "data": {"message_id": question, "content": "Other"}},
        {"type": "select", "data": {"message_id": reply}},
    ):
        await client.send(frame)
        error = await client.until("error")
        assert error["data"]["code"] == "conflict", frame
    await client.until("run_finished")


def _tool_agent():
    from agents.models import Agent
    from agents.tools import builtin_tool_spec

    return Agent.objects.create(
        name="Tooly",
        provider="scripted",
        model="m",
        tools=[builtin_tool_spec("query_database")],
        config={
            "tool_calls": [{"name": "query_database", "arguments": {"sql": "SELECT 1 AS one"}}],
            "echo_tool_result": True,
        },
    )


async def test_a_regenerated_replys_tool_calls_leave_the_path_with_it(connect, user):
    from agents.demo_data import demo_data_ensure

    await database_sync_to_async(demo_data_ensure)()
    agent = await database_sync_to_async(_tool_agent)()
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    _, first = await _exchange(client, "Count.")
    await client.send({"type": "regenerate", "data": {"message_id": first}})
    second = (await client.until("run_finished"))["data"]["message_id"]

    tools = await database_sync_to_async(_messages)(conversation.pk, type__in=["tool_call", "tool_result"])
    assert len(tools) == 4
    by_run = {}
    for message in tools:
        by_run.setdefault(message.metadata["run_id"], set()).add(message.hidden)
    replies = {
        str(m.pk): m
        for m in await database_sync_to_async(_messages)(conversation.pk, role="agent", type="message")
    }
    assert by_run[replies[first].metadata["run_id"]] == {True}
    assert by_run[replies[second].metadata["run_id"]] == {False}
    # The second run's provider saw its own tool round only, never the first run's.
    assert sum(1 for m in scripted.SEEN[-1] if m.role == "tool") == 1
