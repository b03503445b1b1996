"""The message tree over REST, in process through the real ASGI stack: regenerate, edit,
continue and select under ``/api/conversations/{id}/messages/{mid}/``, each person only in their
own conversations, with the same quotas as a send and one error shape."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async as db

from tests.factories import make_agent, make_conversation
from tests.runs.test_quotas import assert_refused, post

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


def _runs(conversation_id: Any) -> list[Any]:
    from runs.models import Run

    return list(Run.objects.filter(conversation_id=conversation_id).order_by("created_at"))


def _replies(conversation_id: Any) -> list[Any]:
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, role="agent", type="message").order_by("seq")
    )


async def _settled(conversation_id: Any, count: int) -> list[Any]:
    """The conversation's replies once ``count`` of them have finished."""
    for _ in range(200):
        replies = await db(_replies)(conversation_id)
        if len(replies) == count and all(r.status != "streaming" for r in replies):
            runs = await db(_runs)(conversation_id)
            if all(r.status not in ("queued", "running") for r in runs):
                return replies
        await asyncio.sleep(0.05)
    raise AssertionError("the replies did not settle")


async def _conversation_with_reply(user: Any, **config: Any) -> tuple[Any, Any, Any]:
    agent = await db(make_agent)(owner=user, **{"reply": "An answer.", "chunks": 2, **config})
    conversation = await db(make_conversation)(user, agent)
    sent = await post(
        user,
        "/api/invoke/",
        {"agent_id": str(agent.pk), "message": "A question?", "conversation_id": str(conversation.pk)},
    )
    assert sent.status_code == 200, sent.content
    [reply] = await _settled(conversation.pk, 1)
    return conversation, reply.parent_id, reply


def _path(conversation: Any, message_id: Any, action: str) -> str:
    return f"/api/conversations/{conversation.pk}/messages/{message_id}/{action}/"


async def test_regenerate_continue_edit_and_select_over_rest(user):
    conversation, question, reply = await _conversation_with_reply(user, finish="length")

    regenerated = await post(user, _path(conversation, reply.pk, "regenerate"))
    assert regenerated.status_code == 202, regenerated.content
    body = regenerated.json()
    assert body["action"] == "regenerate" and body["message_id"] == str(reply.pk) and body["run_id"]
    replies = await _settled(conversation.pk, 2)
    assert {r.parent_id for r in replies} == {question}
    assert [(r.selected, r.hidden) for r in replies] == [(False, True), (True, False)]

    continued = await post(user, _path(conversation, replies[1].pk, "continue"))
    assert continued.status_code == 202, continued.content
    replies = await _settled(conversation.pk, 3)
    assert replies[2].parent_id == replies[1].pk

    edited = await post(user, _path(conversation, question, "edit"), {"content": "Another question?"})
    assert edited.status_code == 202, edited.content
    assert edited.json()["edited_id"] == str(question)
    await _settled(conversation.pk, 4)

    selected = await post(user, _path(conversation, reply.pk, "select"))
    assert selected.status_code == 200, selected.content
    from nexus.asgi import application
    from tests.factories import token_for

    token = await db(token_for)(user)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ) as http:
        detail = await http.get(
            f"/api/conversations/{conversation.pk}/", headers={"Authorization": f"Bearer {token}"}
        )
    messages = detail.json()["messages"]
    assert [m["id"] for m in messages] == [str(question), str(reply.pk)]
    assert messages[0]["sibling_ids"][0] == str(question) and len(messages[0]["sibling_ids"]) == 2
    assert messages[1]["sibling_ids"] == [str(reply.pk), str(replies[1].pk)]
    assert messages[1]["parent_id"] == str(question)


async def test_rest_branching_refuses_outsiders_bad_targets_and_busy_conversations(user, other_user):
    conversation, question, reply = await _conversation_with_reply(user)
    # Another person: the conversation does not exist for them.
    assert_refused(await post(other_user, _path(conversation, reply.pk, "regenerate")), 404, "not_found")
    assert_refused(await post(other_user, _path(conversation, reply.pk, "select")), 404, "not_found")
    assert_refused(
        await post(other_user, _path(conversation, question, "edit"), {"content": "Mine now"}),
        404,
        "not_found",
    )
    # Bad targets and bodies.
    assert_refused(await post(user, _path(conversation, question, "regenerate")), 400, "validation_error")
    assert_refused(await post(user, _path(conversation, reply.pk, "continue")), 400, "validation_error")
    assert_refused(await post(user, _path(conversation, question, "edit"), {}), 400, "validation_error")
    assert_refused(
        await post(user, _path(conversation, question, "edit"), {"content": 7}), 400, "validation_error"
    )
    assert_refused(await post(user, _path(conversation, "not-an-id", "regenerate")), 404, "not_found")
    assert len(await db(_runs)(conversation.pk)) == 1  # nothing refused started a run

    # Signed out: 401.
    from nexus.asgi import application

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://testserver"
    ) as http:
        anonymous = await http.post(_path(conversation, reply.pk, "regenerate"), json={})
    assert anonymous.status_code == 401

    # While a reply is being generated: conflict, and nothing starts.
    slow = await db(make_agent)(
        owner=user, reply="slow " * 100, chunks=100, delay=0.08
    )  # 8 s: the checks below fit inside it on a loaded machine
    busy = await db(make_conversation)(user, slow)
    await post(
        user, "/api/invoke/", {"agent_id": str(slow.pk), "message": "One", "conversation_id": str(busy.pk)}
    )
    [first] = await _settled(busy.pk, 1)
    from runs.sending import message_send

    await message_send(user=user, conversation_id=busy.pk, content="Two")
    assert_refused(await post(user, _path(busy, first.pk, "regenerate")), 409, "conflict")
    assert_refused(
        await post(user, _path(busy, first.parent_id, "edit"), {"content": "One!"}), 409, "conflict"
    )
    assert_refused(await post(user, _path(busy, first.pk, "select")), 409, "conflict")
    await _settled(busy.pk, 2)
    assert len(await db(_runs)(busy.pk)) == 2


def _expire(conversation_id: Any) -> None:
    from conversations.models import Conversation

    Conversation.objects.filter(pk=conversation_id).update(status="expired")


def _status(conversation_id: Any) -> str:
    from conversations.models import Conversation

    return Conversation.objects.get(pk=conversation_id).status


async def test_regenerating_in_an_expired_conversation_revives_it_as_a_message_would(user):
    conversation, _, reply = await _conversation_with_reply(user)
    await db(_expire)(conversation.pk)
    answered = await post(user, _path(conversation, reply.pk, "regenerate"))
    assert answered.status_code == 202, answered.content
    replies = await _settled(conversation.pk, 2)
    assert [r.parent_id for r in replies] == [reply.parent_id, reply.parent_id]  # siblings
    assert await db(_status)(conversation.pk) == "active"
