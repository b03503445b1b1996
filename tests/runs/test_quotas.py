"""Quotas on every run-starting path (SPEC section 12), in process through the real ASGI stack:
the WebSocket (``user_message`` and the seed aliases), ``POST /api/invoke/``, the SSE run
``POST /api/agents/{id}/run/``, ``generate-title`` and an agent-agent session's opening.

Rates and counts answer 429 ``rate_limited`` with ``retry_after`` (an ``error`` frame on the
socket); sizes answer 413 ``message_too_large``. Limits are made small per test."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async as db
from django.db import connection

from tests.factories import make_agent, make_conversation, token_for

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.usefixtures("scripted_provider"),
]

SLOW = {"reply": "x" * 600, "chunks": 600, "delay": 0.05}  # a reply that runs for 30 s unless stopped


@pytest.fixture
def agent(user):
    return make_agent(owner=user, reply="ok", chunks=1)


@pytest.fixture
def conversation(user, agent):
    return make_conversation(user, agent)


async def post(user: Any, path: str, body: dict[str, Any] | None = None) -> Any:
    """A POST through the real ASGI application (its whole answer: an SSE run's stream ends with
    its run)."""
    from nexus.asgi import application

    token = await db(token_for)(user)
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
        return await http.post(path, json=body or {}, headers={"Authorization": f"Bearer {token}"})


def assert_refused(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:300])
    body = response.json()
    assert body["code"] == code and body["detail"] and "T" in body["timestamp"], body
    if status == 429:
        assert body["retry_after"] >= 1
        assert int(response.headers["Retry-After"]) == body["retry_after"]
    return body


def conversation_count() -> int:
    from conversations.models import Conversation

    return Conversation.objects.count()


async def session_settled(conversation_id: str, timeout: float = 20.0) -> None:
    """Wait until the conversation has a run and none of its runs is queued or running."""
    from runs.models import Run

    def unsettled() -> bool:
        runs = list(Run.objects.filter(conversation_id=conversation_id).values_list("status", flat=True))
        return not runs or any(status in ("queued", "running") for status in runs)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await db(unsettled)():
        assert loop.time() < deadline, "the session's turn did not finish"
        await asyncio.sleep(0.05)


async def error_frame(client: Any) -> dict[str, Any]:
    frame = await client.until("error")
    return frame["data"]


# --- runs per minute ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "user_message", "data": {"content": "hi"}},
        {"type": "text", "content": "hi"},
        {"type": "query", "data": {"query": "hi"}},
    ],
    ids=["user_message", "text", "query"],
)
async def test_ws_runs_per_minute_answer_rate_limited_with_retry_after(
    connect, user, conversation, settings, frame
):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 2
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    for _ in range(2):
        await client.send(frame)
        await client.until("run_finished")
    await client.send(frame)
    error = await error_frame(client)
    assert error["code"] == "rate_limited"
    assert 0 < error["retry_after"] <= 60
    await client.send({"type": "ping"})  # the socket stays open
    await client.until("pong")


async def test_invoke_runs_per_minute_answer_429_and_leave_nothing(user, agent, settings):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 1
    first = await post(user, "/api/invoke/", {"agent_id": str(agent.pk), "message": "hi"})
    assert first.status_code == 200 and first.json()["success"]
    before = await db(conversation_count)()
    refused = await post(user, "/api/invoke/", {"agent_id": str(agent.pk), "message": "again"})
    assert_refused(refused, 429, "rate_limited")
    assert await db(conversation_count)() == before  # the refused request made no conversation


async def test_sse_run_runs_per_minute_answer_429(user, agent, settings):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 1
    first = await post(user, f"/api/agents/{agent.pk}/run/", {"query": "hi"})
    assert first.status_code == 200 and first.headers["Content-Type"] == "text/event-stream"
    before = await db(conversation_count)()
    refused = await post(user, f"/api/agents/{agent.pk}/run/", {"query": "again"})
    assert_refused(refused, 429, "rate_limited")
    assert await db(conversation_count)() == before


async def test_generate_title_counts_as_a_run_start(user, agent, settings):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 1

    def titled_conversation():
        from conversations.models import Message

        conversation = make_conversation(user, agent)
        Message.objects.create(conversation=conversation, role="user", content="What is two and two?")
        return conversation

    conversation = await db(titled_conversation)()
    path = f"/api/conversations/{conversation.pk}/generate-title/"
    assert (await post(user, path)).status_code == 200
    assert_refused(await post(user, path), 429, "rate_limited")


async def test_the_per_minute_quota_is_one_budget_across_paths_and_per_user(
    connect, user, other_user, agent, conversation, settings
):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 2
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "one"}})
    await client.until("run_finished")
    assert (
        await post(user, "/api/invoke/", {"agent_id": str(agent.pk), "message": "two"})
    ).status_code == 200
    assert_refused(await post(user, f"/api/agents/{agent.pk}/run/", {"query": "three"}), 429, "rate_limited")
    others = await db(make_agent)(owner=other_user, reply="ok", chunks=1)
    answer = await post(other_user, "/api/invoke/", {"agent_id": str(others.pk), "message": "mine"})
    assert answer.status_code == 200  # another user's budget is their own


@pytest.mark.skipif(
    connection.vendor == "sqlite",
    reason="the REST view's thread and the session's first turn write at once, which SQLite's "
    "in-memory test database refuses instead of waiting (a SQLite file waits: busy timeout); CI runs "
    "this on PostgreSQL",
)
async def test_an_agent_agent_session_opening_counts_and_a_refused_one_leaves_nothing(user, settings):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 1
    turn = {"reply": "ok", "chunks": 1, "delay": 0.5}
    first, second = await db(
        lambda: (make_agent(owner=user, name="A", **turn), make_agent(owner=user, name="B", **turn))
    )()
    session = {
        "session_type": "agent_agent",
        "agents": [str(first.pk), str(second.pk)],
        "settings": {"opening_message": "Discuss.", "max_turns": 1},
    }
    opened = await post(user, "/api/conversations/", session)
    assert opened.status_code == 201
    # The session's one turn ends first, so the second request meets the budget, not the turn.
    await session_settled(opened.json()["id"])
    before = await db(conversation_count)()
    assert_refused(await post(user, "/api/conversations/", session), 429, "rate_limited")
    assert await db(conversation_count)() == before


# --- active runs per user ----------------------------------------------------------------------


async def test_ws_active_runs_answer_rate_limited_until_one_finishes(connect, user, settings):
    settings.NEXUS_MAX_ACTIVE_RUNS_PER_USER = 1
    slow = await db(make_conversation)(user, await db(make_agent)(owner=user, **SLOW))
    client = await connect(f"/ws/conversations/{slow.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "long one"}})
    await client.until("run_started")
    await client.send({"type": "user_message", "data": {"content": "queued one"}})
    error = await error_frame(client)
    assert error["code"] == "rate_limited" and error["retry_after"] > 0
    await client.send({"type": "stop"})
    await client.until("run_finished", status="stopped")
    await client.send({"type": "user_message", "data": {"content": "now there is room"}})
    assert (await client.until("ack"))["data"]["run_id"]


async def test_invoke_and_sse_run_answer_429_past_the_active_runs_quota(connect, user, agent, settings):
    settings.NEXUS_MAX_ACTIVE_RUNS_PER_USER = 1
    slow = await db(make_conversation)(user, await db(make_agent)(owner=user, **SLOW))
    client = await connect(f"/ws/conversations/{slow.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "long one"}})
    await client.until("run_started")
    before = await db(conversation_count)()
    assert_refused(
        await post(user, "/api/invoke/", {"agent_id": str(agent.pk), "message": "hi"}), 429, "rate_limited"
    )
    assert_refused(await post(user, f"/api/agents/{agent.pk}/run/", {"query": "hi"}), 429, "rate_limited")
    assert await db(conversation_count)() == before
    await client.send({"type": "stop"})
    await client.until("run_finished", status="stopped")


# --- content length ----------------------------------------------------------------------------


async def test_ws_content_past_the_limit_is_message_too_large(connect, user, conversation, settings):
    settings.NEXUS_MAX_CONTENT_CHARS = 10
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "x" * 11}})
    error = await error_frame(client)
    assert error["code"] == "message_too_large"
    await client.send({"type": "user_message", "data": {"content": "x" * 10}})
    await client.until("run_finished")


async def test_invoke_and_sse_run_content_past_the_limit_answer_413(user, agent, settings):
    settings.NEXUS_MAX_CONTENT_CHARS = 10
    before = await db(conversation_count)()
    assert_refused(
        await post(user, "/api/invoke/", {"agent_id": str(agent.pk), "message": "x" * 11}),
        413,
        "message_too_large",
    )
    assert_refused(
        await post(user, f"/api/agents/{agent.pk}/run/", {"query": "x" * 11}), 413, "message_too_large"
    )
    history = [{"role": "user", "content": "y" * 11}]
    assert_refused(
        await post(user, f"/api/agents/{agent.pk}/run/", {"query": "ok", "history": history}),
        413,
        "message_too_large",
    )
    assert await db(conversation_count)() == before


async def test_a_request_body_past_the_frame_limit_answers_413_json(user, agent, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    body = {"agent_id": str(agent.pk), "message": "x" * 4096}
    assert_refused(await post(user, "/api/invoke/", body), 413, "message_too_large")
    assert_refused(
        await post(user, "/api/conversations/", {"agents": [str(agent.pk)], "title": "x" * 4096}),
        413,
        "message_too_large",
    )


# --- conversation context size -----------------------------------------------------------------


async def test_context_past_the_limit_is_refused_on_create_initialize_and_merge(
    connect, user, agent, conversation, settings
):
    settings.NEXUS_MAX_CONTEXT_BYTES = 100
    big = {"notes": "x" * 100}
    response = await post(user, "/api/conversations/", {"agents": [str(agent.pk)], "context": big})
    assert_refused(response, 413, "message_too_large")

    fresh = await connect("/ws/agent/", user=user)
    await fresh.send({"type": "initialize", "data": {"agent_id": str(agent.pk), "context": big}})
    assert (await error_frame(fresh))["code"] == "message_too_large"

    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "initialize", "data": {"context": {"a": "x" * 40}}})
    await client.until("session_state")
    # each part fits; merged they do not
    await client.send({"type": "initialize", "data": {"context": {"b": "y" * 60}}})
    assert (await error_frame(client))["code"] == "message_too_large"
    await client.send({"type": "user_message", "data": {"content": "hi", "context": {"c": "z" * 60}}})
    assert (await error_frame(client))["code"] == "message_too_large"

    def stored_context():
        conversation.refresh_from_db()
        return conversation.context

    assert await db(stored_context)() == {"a": "x" * 40}


# --- event log bytes per conversation ------------------------------------------------------------


def event(n: int, size: int = 100) -> bytes:
    head = b'{"type":"streaming_chunk","data":{"n":%d,"pad":"' % n
    return head + b"x" * (size - len(head) - 3) + b'"}}'


@pytest.fixture(params=["memory", "redis"])
async def capped_log(request):
    from runs.eventlog.memory_log import MemoryEventLog
    from runs.eventlog.redis_log import RedisEventLog

    if request.param == "memory":
        log = MemoryEventLog(maxlen=1000, ttl=3600, max_bytes=1000)
    else:
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        log = RedisEventLog(url=url, prefix=prefix, maxlen=1000, ttl=3600, max_bytes=1000)
    yield log
    if isinstance(log, RedisEventLog):
        keys = await log._redis.keys(f"{log.prefix}:*")
        if keys:
            await log._redis.delete(*keys)
    await log.close()


async def test_the_event_log_holds_at_most_its_bytes_dropping_the_oldest(capped_log):
    assert len(event(1)) == 100
    for start in range(0, 30, 3):
        await capped_log.append("c1", [event(n) for n in range(start, start + 3)])
    assert not (await capped_log.read_after("c1", 0)).covered  # the oldest are gone: resync
    replay = await capped_log.read_after("c1", 20)
    assert replay.covered and [e.seq for e in replay.events] == list(range(21, 31))
    assert not (await capped_log.read_after("c1", 19)).covered
    await capped_log.append("other", [event(1)])
    assert (await capped_log.read_after("other", 0)).covered  # per conversation


async def test_the_event_log_never_drops_the_events_it_is_appending(capped_log):
    await capped_log.append("c1", [event(1), event(2)])
    first = await capped_log.append("c1", [event(3, size=700), event(4, size=700)])
    replay = await capped_log.read_after("c1", first - 1)
    assert replay.covered and [e.seq for e in replay.events] == [first, first + 1]
    assert replay.events[0].payload == event(3, size=700)
    assert not (await capped_log.read_after("c1", 0)).covered


async def test_a_socket_resuming_from_trimmed_events_is_told_to_resync(connect, user, settings):
    settings.NEXUS_EVENT_LOG_MAX_BYTES = 2000
    agent = await db(make_agent)(owner=user, reply="word " * 200, chunks=100)
    conversation = await db(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.send({"type": "user_message", "data": {"content": "a long one"}})
    await client.until("run_finished")
    sent = [f["seq"] for f in client.frames if "seq" in f]
    assert sent == list(range(sent[0], sent[-1] + 1))  # live, nothing was lost
    late = await connect(f"/ws/conversations/{conversation.pk}/?last_seq={sent[0]}", user=user)
    info = await late.until("info")
    assert info["data"]["code"] == "resync"
    state = await late.until("session_state")
    assert state["data"]["messages"][-1]["content"] == "word " * 200  # the stored reply is whole


# --- the shared rate-limit primitive ------------------------------------------------------------


async def test_the_rate_limiter_is_one_budget_for_every_process(redis_url, redis_prefix):
    from core.ratelimit import RedisRateLimiter

    one = RedisRateLimiter(url=redis_url, prefix=redis_prefix)
    two = RedisRateLimiter(url=redis_url, prefix=redis_prefix)  # another process's client
    try:
        assert (await one.hit("runs:rate:7", limit=2, window=60)).allowed
        assert (await two.hit("runs:rate:7", limit=2, window=60)).allowed
        refused = await one.hit("runs:rate:7", limit=2, window=60)
        assert not refused.allowed and 0 < refused.retry_after <= 60
        assert (await two.hit("runs:rate:8", limit=2, window=60)).allowed  # another user
    finally:
        keys = await one._redis.keys(f"{redis_prefix}:*")
        if keys:
            await one._redis.delete(*keys)
        await one._redis.aclose()
        await two._redis.aclose()
