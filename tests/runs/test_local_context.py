"""The bundled SmolLM2 model (2,048-token window) through the whole engine: a long conversation
keeps being answered because every request is fitted to the window, and a paste too long for it
is refused up front while the chat goes on. Slow on 2 cores: replies are kept to a few tokens.

Thirty exchanges run against a 512-token window the agent sets (the same tokenizer and fitting,
a quarter of the prompt evaluation: 30 full 2,048-token prompts take 5 minutes of a quiet 2-core
machine); the model's whole 2,048-token window is held by a conversation stored past it."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async as db

from tests.factories import make_conversation

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(3600), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _no_ping(settings):
    """The test's socket answers no server pings: none are sent while it waits for slow replies."""
    settings.NEXUS_WS_PING_INTERVAL = 3600.0


EXCHANGES = 30
WINDOW = 512  # the agent's own window (the model's is 2,048: a test below)
TOPICS = ["rivers", "bread", "trains", "owls", "glass", "tides", "maps", "bees", "salt", "kites"]


def _agent(**fields: Any) -> Any:
    from agents.models import Agent

    return Agent.objects.create(
        name="Small",
        provider="local",
        model="smollm2-135m-instruct",
        system_prompt="You answer in one short sentence.",
        temperature=0.0,
        max_tokens=8,
        # A loaded 2-core machine evaluates a full 2,048-token prompt slowly: slow, not failed.
        config={"timeouts": {"first_token": 600, "between_chunks": 300, "total": 600}},
        **fields,
    )


def _question(i: int) -> str:
    """About 600 characters (~130 tokens): a dozen exchanges fill the window."""
    topic = TOPICS[i % len(TOPICS)]
    filler = " ".join(
        f"Here is note {j} about {topic}, kept for the record of exchange {i}." for j in range(9)
    )
    return f"Exchange {i}. {filler} In one sentence: what do you like about {topic}?"


def _replies(conversation_id: Any) -> list[tuple[str, str, dict]]:
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, role="agent", type="message")
        .order_by("seq")
        .values_list("status", "content", "metadata")
    )


def _whole_history_tokens(conversation_id: Any, agent: Any, messages: int = 2 * EXCHANGES) -> int:
    """The whole conversation (its ``messages``) as one prompt, counted with the model's tokenizer."""
    from conversations.models import Conversation
    from providers.base import GenerationOptions
    from providers.local import LocalProvider
    from runs.history import chat_history

    history = chat_history(conversation=Conversation.objects.get(pk=conversation_id), agent=agent)
    assert len(history) == 1 + messages
    counter = LocalProvider().token_counter(model=agent.model, options=GenerationOptions())
    return counter.prompt_tokens(history)


async def _exchange(client: Any, content: str, timeout: float = 620) -> dict[str, Any]:
    await client.send({"type": "user_message", "data": {"content": content}})
    finished = await client.until("run_finished", timeout=timeout)
    return finished["data"]


async def test_thirty_exchanges_with_the_bundled_model_are_all_answered(connect, user):
    agent = await db(_agent)(context_window=WINDOW)
    conversation = await db(make_conversation)(user, agent)

    errors = []
    for i in range(EXCHANGES):
        # A socket per exchange, as a page that comes back: on a loaded machine the whole
        # conversation outlasts an access token (15 minutes), which closes a socket (4002).
        client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
        await client.until("session_state")
        finished = await _exchange(client, _question(i))
        assert finished["status"] == "completed", (i, finished)
        errors += [frame for frame in client.frames if frame["type"] == "error"]
        await client.close()

    assert errors == []
    replies = await db(_replies)(conversation.pk)
    assert len(replies) == EXCHANGES
    for status, _content, metadata in replies:
        assert status == "complete" and "error" not in metadata
        assert metadata["finish_reason"] in ("stop", "length")
        # What llama.cpp evaluated: a prompt that left the reply its tokens.
        assert metadata["usage"]["input_tokens"] + 8 <= WINDOW
    # The conversation as a whole is far past the window: without fitting, the later requests
    # would have failed ("Requested tokens (...) exceed context window of 2048").
    assert await db(_whole_history_tokens)(conversation.pk, agent) > 2 * WINDOW
    late_prompts = [metadata["usage"]["input_tokens"] for _, _, metadata in replies[-5:]]
    assert min(late_prompts) > WINDOW - 64 - 200  # near the window's edge: old turns made room


def _store_long_past(conversation: Any, agent: Any, exchanges: int) -> None:
    """``exchanges`` questions and answers stored as a conversation's past (no model run)."""
    from conversations.models import Conversation, Message

    parent = None
    for i in range(exchanges):
        for role, content in (("user", _question(i)), ("agent", f"I like {TOPICS[i % len(TOPICS)]}.")):
            parent = Message.objects.create(
                conversation=conversation,
                agent=agent if role == "agent" else None,
                role=role,
                type="message",
                status="complete",
                content=content,
                seq=2 * i + (1 if role == "user" else 2),
                parent=parent,
            )
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=2 * exchanges)


async def test_a_conversation_past_the_models_whole_window_is_answered_within_it(connect, user):
    agent = await db(_agent)()  # no window of its own: the loaded model's 2,048 tokens
    conversation = await db(make_conversation)(user, agent)
    await db(_store_long_past)(conversation, agent, 24)
    assert await db(_whole_history_tokens)(conversation.pk, agent, 48) > 2048  # unfitted, it fails

    for i in range(2):
        client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
        await client.until("session_state")
        finished = await _exchange(client, _question(100 + i))
        assert finished["status"] == "completed", finished
        assert [frame for frame in client.frames if frame["type"] == "error"] == []
        await client.close()
    replies = await db(_replies)(conversation.pk)
    for status, _content, metadata in replies[-2:]:
        assert status == "complete" and "error" not in metadata
        # what llama.cpp evaluated: near the window's edge, and the reply's tokens left
        assert 2048 - 64 - 300 < metadata["usage"]["input_tokens"] <= 2048 - 8


def _stored_user_messages(conversation_id: Any) -> list[str]:
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation_id=conversation_id, role="user").values_list("content", flat=True)
    )


async def test_a_200000_character_paste_is_refused_and_the_chat_goes_on(connect, user, settings):
    settings.NEXUS_MAX_CONTENT_CHARS = 300_000  # past the size quota, so the window is what refuses
    agent = await db(_agent)()
    conversation = await db(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")

    await client.send({"type": "user_message", "data": {"content": "paste " * 33_334}})  # 200,004 chars
    error = await client.until("error", timeout=60)
    assert error["data"]["code"] == "validation_error"
    assert "too long" in error["data"]["message"] and "2048" in error["data"]["message"]
    assert await db(_stored_user_messages)(conversation.pk) == []

    finished = await _exchange(client, "Hello! How are you?")
    assert finished["status"] == "completed"
    # Under the size quota too (its default, 100,000 characters), a message too long for the
    # window is this same refusal.
    settings.NEXUS_MAX_CONTENT_CHARS = 100_000
    await client.send({"type": "user_message", "data": {"content": "word " * 2000}})
    error = await client.until("error", timeout=60)
    assert error["data"]["code"] == "validation_error"
    finished = await _exchange(client, "And now?")
    assert finished["status"] == "completed"
    await client.close()

    assert await db(_stored_user_messages)(conversation.pk) == ["Hello! How are you?", "And now?"]
    replies = await db(_replies)(conversation.pk)
    assert [status for status, _, _ in replies] == ["complete", "complete"]
