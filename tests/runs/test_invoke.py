"""``POST /api/invoke/`` (seed 000) in process through the real ASGI stack: a retried request (the
same ``client_message_id``) answers with the first request's reply, at once, starting nothing."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async as db

from tests.factories import make_agent, make_conversation
from tests.runs.test_quotas import post

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]


def run_count(conversation_id: str) -> int:
    from runs.models import Run

    return Run.objects.filter(conversation_id=conversation_id).count()


async def test_a_retried_invoke_answers_with_the_first_reply_without_waiting(user):
    agent = await db(make_agent)(owner=user, reply="The first and only reply.", chunks=3)
    conversation = await db(make_conversation)(user, agent)
    body = {
        "agent_id": str(agent.pk),
        "message": "hello",
        "conversation_id": str(conversation.pk),
        "client_message_id": "retry-me",
    }
    first = (await post(user, "/api/invoke/", body)).json()
    assert first["success"] and first["response"] == "The first and only reply."

    # Before the fix the retry followed the log for the run's events, which had all gone by, and
    # answered only at the invoke timeout (a 504 after minutes); the test's bound is far below.
    retried = await asyncio.wait_for(post(user, "/api/invoke/", body), timeout=20)

    assert retried.status_code == 200
    again = retried.json()
    assert again["success"] and again["status"] == "completed"
    assert again["response"] == first["response"]
    assert again["message_id"] == first["message_id"] and again["run_id"] == first["run_id"]
    assert await db(run_count)(str(conversation.pk)) == 1


async def test_a_retried_sse_run_streams_the_first_run_again(user):
    agent = await db(make_agent)(owner=user, reply="Streamed once.", chunks=2)
    conversation = await db(make_conversation)(user, agent)
    body = {"query": "hello", "conversation_id": str(conversation.pk), "client_message_id": "sse-retry"}
    first = await post(user, f"/api/agents/{agent.pk}/run/", body)
    retried = await asyncio.wait_for(post(user, f"/api/agents/{agent.pk}/run/", body), timeout=20)

    assert retried.status_code == 200
    assert b'"run_finished"' in retried.content and b"Streamed once." in retried.content
    assert retried.content.count(b'"run_finished"') == first.content.count(b'"run_finished"') == 1
    assert await db(run_count)(str(conversation.pk)) == 1
