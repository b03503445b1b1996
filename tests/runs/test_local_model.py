"""A real two-agent exchange on the bundled SmolLM2 model, through the whole engine."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_conversation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240), pytest.mark.slow]


def _agents():
    from agents.models import Agent

    common = {"provider": "local", "model": "smollm2-135m-instruct", "temperature": 0.0, "max_tokens": 40}
    alpha = Agent.objects.create(
        name="Optimist", system_prompt="You are cheerful. One short sentence.", **common
    )
    beta = Agent.objects.create(
        name="Skeptic", system_prompt="You doubt things. One short sentence.", **common
    )
    return alpha, beta


def _turns(conversation_id):
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, role="agent", type="message")
        .order_by("seq")
        .values_list("agent__name", "content", "status", "metadata")
    )


async def test_two_local_agents_talk_for_three_turns(connect, user):
    alpha, beta = await database_sync_to_async(_agents)()
    conversation = await database_sync_to_async(make_conversation)(
        user, alpha, beta, session_type="agent_agent", settings={"max_turns": 3}
    )
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "Is it going to rain tomorrow?"}})
    chunks = 0
    while True:
        frame = await client.recv(timeout=120)
        chunks += frame["type"] == "streaming_chunk"
        if frame["type"] == "info":
            break
    assert frame["data"]["code"] == "turn_limit_reached"
    turns = await database_sync_to_async(_turns)(conversation.pk)
    assert [name for name, *_ in turns] == ["Optimist", "Skeptic", "Optimist"]
    for _, content, status, metadata in turns:
        assert status == "complete" and content.strip()
        assert metadata["provider"] == "local" and metadata["finish_reason"] in ("stop", "length")
    assert chunks > 6  # tokens streamed, not one blob per turn
    await client.close()
