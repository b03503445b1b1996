"""Deleting a conversation (or the agent) while a reply is in flight: through the REST API, the
admin's delete view and its "delete selected" action. The reply stops (its provider's stream is
closed), the watchers are told (``run_finished`` stopped, ``system`` ``conversation_deleted``, close
4001 after ``not_found``), and nothing logs an error or a traceback, even when the reply's row was
not stored yet. Worker mode: tests/realtime_procs/test_deletion.py."""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient
from django.urls import reverse

from tests.realtime import scripted
from tests.realtime.conftest import make_agent, make_conversation, token_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("scripted_provider"),
    pytest.mark.timeout(60),
]

# The provider answers nothing for a minute: the reply's row is not stored while the test runs.
SILENT = {"reply": "late", "chunks": 1, "delay": 60}
# A reply of 100 chunks over 10 s: its row is stored after the first.
LONG = {"reply": "word " * 100, "chunks": 100, "delay": 0.1}


def _errors(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


async def _runs_end() -> None:
    """Every run task of this process ends (stopped) well before its reply would have."""
    from runs.manager import get_run_manager

    tasks = list(get_run_manager().tasks.values())
    assert tasks, "no run was in flight"
    _, pending = await asyncio.wait(tasks, timeout=15)
    assert not pending, "the run never ended"


def _left(conversation_id) -> tuple[int, int]:
    from conversations.models import Message
    from runs.models import Run

    return (
        Run.objects.filter(conversation_id=conversation_id).count(),
        Message.objects.filter(conversation_id=conversation_id).count(),
    )


async def _replying(connect, user, script: dict, wait_for: str):
    agent = await database_sync_to_async(make_agent)(owner=user, **script)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "a long story"}})
    await client.until(wait_for)
    return agent, conversation, client


async def _told_deleted(client) -> dict:
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "stopped", finished
    deleted = await client.until("system")
    assert deleted["data"]["code"] == "conversation_deleted", deleted
    assert await client.closed() == 4001
    assert client.frames[-1]["type"] == "error" and client.frames[-1]["data"]["code"] == "not_found"
    return finished


async def test_a_conversation_deleted_before_its_reply_row_is_stored_ends_quietly(connect, user, caplog):
    caplog.set_level(logging.INFO)
    _, conversation, client = await _replying(connect, user, SILENT, "run_started")
    token = await database_sync_to_async(token_for)(user)
    response = await AsyncClient().delete(
        f"/api/conversations/{conversation.pk}/", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 204
    await _runs_end()
    assert scripted.CLOSED, "the provider was still asked for the deleted conversation's reply"
    finished = await _told_deleted(client)
    assert finished["data"]["run_id"]
    assert _errors(caplog) == []
    assert await database_sync_to_async(_left)(conversation.pk) == (0, 0)
    # A second DELETE: the conversation is gone (404), nothing else happens.
    again = await AsyncClient().delete(
        f"/api/conversations/{conversation.pk}/", headers={"authorization": f"Bearer {token}"}
    )
    assert again.status_code == 404


@pytest.mark.parametrize("how", ["delete_view", "delete_selected_action"])
async def test_the_admin_deleting_a_conversation_stops_its_reply(connect, user, staff_user, caplog, how):
    caplog.set_level(logging.INFO)
    _, conversation, client = await _replying(connect, user, LONG, "streaming_chunk")
    admin = AsyncClient()
    await admin.aforce_login(staff_user)
    if how == "delete_view":
        url = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
        response = await admin.post(url, {"post": "yes"})
    else:
        url = reverse("admin:conversations_conversation_changelist")
        response = await admin.post(
            url, {"action": "delete_selected", "_selected_action": [str(conversation.pk)], "post": "yes"}
        )
    assert response.status_code == 302, response.content[:500]
    await _runs_end()
    assert scripted.CLOSED, "the provider was still asked for the deleted conversation's reply"
    await _told_deleted(client)
    assert _errors(caplog) == []
    assert await database_sync_to_async(_left)(conversation.pk) == (0, 0)


async def test_an_agent_deleted_while_it_replies_stops_the_reply_quietly(connect, user, caplog):
    """The agent has not spoken yet (its reply's row is not stored), so it may be deleted; its runs
    go with it (cascade). The run notices its row is gone, stops, and tells the watchers."""
    caplog.set_level(logging.INFO)
    agent, conversation, client = await _replying(connect, user, SILENT, "run_started")
    token = await database_sync_to_async(token_for)(user)
    response = await AsyncClient().delete(
        f"/api/agents/{agent.pk}/", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 204, response.content
    await _runs_end()
    assert scripted.CLOSED, "the provider was still asked for the deleted agent's reply"
    finished = await client.until("run_finished")
    assert finished["data"]["status"] == "stopped", finished
    assert _errors(caplog) == []
    # The conversation stays, with the person's message; the run went with its agent.
    assert await database_sync_to_async(_left)(conversation.pk) == (0, 1)


async def test_a_run_deleted_in_the_admin_while_it_replies_keeps_its_reply_as_stopped(
    connect, user, staff_user, caplog
):
    """Only the run's row goes (the admin's delete view of a run): the run notices within a second,
    stops, keeps the partial reply as ``stopped`` and tells the watchers; the conversation stays."""
    from conversations.models import Message
    from runs.models import Run

    caplog.set_level(logging.INFO)
    _, conversation, client = await _replying(connect, user, LONG, "streaming_chunk")
    run = await database_sync_to_async(Run.objects.get)(conversation_id=conversation.pk)
    admin = AsyncClient()
    await admin.aforce_login(staff_user)
    response = await admin.post(reverse("admin:runs_run_delete", args=[run.pk]), {"post": "yes"})
    assert response.status_code == 302, response.content[:500]
    await _runs_end()
    assert scripted.CLOSED, "the provider was still asked for the deleted run's reply"
    finished = await client.until("run_finished", run_id=str(run.pk))
    assert finished["data"]["status"] == "stopped", finished
    reply = await database_sync_to_async(Message.objects.get)(pk=finished["data"]["message_id"])
    assert reply.status == "stopped" and reply.content and len(reply.content) < len(LONG["reply"])
    assert _errors(caplog) == []
