"""Context windows through the whole run path: socket -> engine -> the real openai adapter -> a
loopback server that records the request. The openai provider counts with the documented estimate
(characters / 4 rounded up, + 4 a message, + 3 a prompt), so the numbers below are worked by hand.

The agent: system prompt "Be brief." (9 chars: 3 + 4 = 7 tokens; alone as a prompt, 10).
A stored message of 396 characters costs 99 + 4 = 103 tokens.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async as db

from tests.factories import make_conversation
from tests.fakes import FakeOpenAI, Reply
from tests.runs.test_quotas import assert_refused, post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

FAST = {"timeouts": {"connect": 1, "first_token": 5, "between_chunks": 5, "total": 8}}


@pytest.fixture
def capture():
    with FakeOpenAI() as server:
        yield server


def _agent(owner: Any, base_url: str, **fields: Any) -> Any:
    from agents.models import Agent

    return Agent.objects.create(
        owner=owner,
        name="Windowed",
        provider="openai",
        model="gpt-4o-mini",
        base_url=base_url,
        system_prompt="Be brief.",
        config=FAST,
        **fields,
    )


def _with_history(owner: Any, agent: Any, exchanges: int) -> Any:
    """A conversation with ``exchanges`` stored user/agent pairs of 396 characters each."""
    from conversations.models import Conversation, Message

    conversation = make_conversation(owner, agent)
    seq = 0
    for i in range(exchanges):
        for role in ("user", "agent"):
            seq += 1
            Message.objects.create(
                conversation=conversation,
                role=role,
                agent=agent if role == "agent" else None,
                content=f"{role}{i:02d}".ljust(396, "."),
                seq=seq,
            )
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=seq)
    return conversation


async def _send(connect: Any, user: Any, conversation: Any, content: str) -> dict[str, Any]:
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": content}})
    finished = await client.until("run_finished", timeout=30)
    await client.close()
    return finished


async def test_the_request_keeps_the_system_prompt_and_the_newest_turns_that_fit(connect, user, capture):
    capture.script(Reply(text="Sure."))
    agent = await db(_agent)(user, capture.base_url, context_window=400, max_tokens=50)
    conversation = await db(_with_history)(user, agent, exchanges=4)

    finished = await _send(connect, user, conversation, "What now?")

    assert finished["data"]["status"] == "completed"
    body = capture.requests[0].json
    # Reserve for the reply: max(64, min(50, 400 // 2)) = 64, so the prompt may take 336 tokens:
    # system 10 + "What now?" 7 = 17; the newest stored pair 206 more (223); the next would be 429.
    assert [(m["role"], m["content"][:7]) for m in body["messages"]] == [
        ("system", "Be brief."[:7]),
        ("user", "user03."),
        ("assistant", "agent03"),
        ("user", "What no"),
    ]
    assert body["max_tokens"] == 50  # the window leaves 177; the agent's max_tokens caps it


async def test_the_reply_budget_is_what_the_window_leaves(connect, user, capture):
    capture.script(Reply(text="Ok."))
    agent = await db(_agent)(user, capture.base_url, context_window=400, max_tokens=300)
    conversation = await db(_with_history)(user, agent, exchanges=1)

    finished = await _send(connect, user, conversation, "q" * 1200)  # 300 + 4 = 304 tokens

    assert finished["data"]["status"] == "completed"
    body = capture.requests[0].json
    # The newest turn always stays: 10 + 304 = 314; the stored pair cannot (reserve 200).
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["max_tokens"] == 400 - 314


async def test_without_a_window_setting_the_providers_default_keeps_everything(connect, user, capture):
    capture.script(Reply(text="Ok."))
    agent = await db(_agent)(user, capture.base_url, max_tokens=50)  # openai: 128,000 tokens
    conversation = await db(_with_history)(user, agent, exchanges=4)

    await _send(connect, user, conversation, "What now?")

    body = capture.requests[0].json
    assert len(body["messages"]) == 1 + 8 + 1
    assert body["max_tokens"] == 50


def _stored_user_messages(conversation_id: Any) -> list[str]:
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, role="user").values_list("content", flat=True)
    )


async def test_a_message_too_long_for_the_window_is_refused_and_the_chat_goes_on(connect, user, capture):
    capture.script(Reply(text="Hello again."))
    agent = await db(_agent)(user, capture.base_url, context_window=400, max_tokens=50)
    conversation = await db(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")

    # 1,200 characters: 10 + 304 = 314 tokens leave 86 for the reply: accepted.
    # 1,400 characters: 10 + 354 = 364 leave 36, under the minimum of 64: refused.
    await client.send({"type": "user_message", "data": {"content": "z" * 1400, "client_message_id": "big"}})
    error = await client.until("error")
    assert error["data"]["code"] == "validation_error"
    assert "too long" in error["data"]["message"] and "400" in error["data"]["message"]
    assert capture.requests == []
    assert await db(_stored_user_messages)(conversation.pk) == []

    await client.send({"type": "user_message", "data": {"content": "hi", "client_message_id": "small"}})
    finished = await client.until("run_finished", timeout=30)
    assert finished["data"]["status"] == "completed"
    assert len(capture.requests) == 1
    assert await db(_stored_user_messages)(conversation.pk) == ["hi"]
    await client.close()


async def test_the_rest_run_endpoint_refuses_a_message_too_long_with_400(user, capture):
    agent = await db(_agent)(user, capture.base_url, context_window=400, max_tokens=50)

    response = await post(user, f"/api/agents/{agent.pk}/run/", {"query": "z" * 1400})

    body = assert_refused(response, 400, "validation_error")
    assert "too long" in body["detail"]
    assert body["errors"]["content"]
    assert capture.requests == []


def _failed_reply(conversation_id: Any) -> dict[str, Any]:
    from conversations.models import Message

    message = Message.objects.get(conversation_id=conversation_id, role="agent")
    return {"status": message.status, "metadata": message.metadata}


async def test_a_failed_reply_keeps_its_reason_for_the_messages_api(connect, user, capture):
    from tests.factories import token_for

    capture.script(Reply(status=400))
    agent = await db(_agent)(user, capture.base_url)
    conversation = await db(make_conversation)(user, agent)

    finished = await _send(connect, user, conversation, "hello")

    assert finished["data"]["status"] == "failed"
    reply = await db(_failed_reply)(conversation.pk)
    assert reply["status"] == "error"
    assert reply["metadata"]["error"] == finished["data"]["error"]
    assert reply["metadata"]["error"]["message"]

    import httpx

    from nexus.asgi import application

    token = await db(token_for)(user)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        response = await http.get(
            f"/api/conversations/{conversation.pk}/", headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200, response.content[:300]
    agent_rows = [row for row in response.json()["messages"] if row["role"] == "agent"]
    assert agent_rows[0]["status"] == "error"
    assert agent_rows[0]["metadata"]["error"]["message"] == finished["data"]["error"]["message"]
