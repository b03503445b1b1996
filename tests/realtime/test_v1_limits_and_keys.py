"""``/v1`` in process through the real ASGI application (docs/v1.md): the per-user run quota in
OpenAI's error shape, and personal API keys' rules (expiry, scopes, the hash, a stream ended once
its key is revoked). The official SDK against a real daphne is ``tests/dialects/test_v1.py``."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async as db
from django.utils import timezone

from tests.factories import make_agent

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def _key(user: Any, **kwargs: Any) -> tuple[Any, str]:
    from core.apikeys import api_key_create

    return api_key_create(user=user, name="k", **kwargs)


async def _post(key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    from nexus.asgi import application

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
        return await http.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def _conversations() -> int:
    from conversations.models import Conversation

    return Conversation.objects.count()


@pytest.mark.usefixtures("scripted_provider")
async def test_runs_per_minute_answer_429_in_openai_shape_and_leave_nothing(user, settings):
    settings.NEXUS_RUNS_PER_MINUTE_PER_USER = 1
    agent = await db(make_agent)(owner=user, reply="ok", chunks=1)
    _, key = await db(_key)(user)
    body = {"model": str(agent.pk), "messages": [{"role": "user", "content": "hi"}]}
    first = await _post(key, "/v1/chat/completions", body)
    assert first.status_code == 200, first.text
    assert first.json()["choices"][0]["message"]["content"] == "ok"
    before = await db(_conversations)()
    for path, payload in (
        ("/v1/chat/completions", body),
        ("/v1/responses", {"model": str(agent.pk), "input": "x"}),
    ):
        refused = await _post(key, path, payload)
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limited"
        assert 1 <= error["retry_after"] <= 60 and int(refused.headers["Retry-After"]) == error["retry_after"]
    assert await db(_conversations)() == before  # a refused request made no conversation


def test_a_key_is_stored_hashed_and_checked_for_expiry_scope_and_its_user(user):
    from core.apikeys import user_from_api_key
    from core.auth import AuthenticationFailed
    from core.errors import Forbidden
    from core.models import ApiKey

    row, key = _key(user, scopes=["v1"])
    stored = ApiKey.objects.get(pk=row.pk)
    assert key not in str(stored.__dict__) and stored.secret_hash == hashlib.sha256(key.encode()).hexdigest()
    assert user_from_api_key(key, scope="v1") == user
    assert ApiKey.objects.get(pk=row.pk).last_used_at is not None
    with pytest.raises(Forbidden):
        user_from_api_key(key, scope="api")
    for bad in (key + "x", key.replace(".", "-"), "nx-", "nx-abc.def"):
        with pytest.raises(AuthenticationFailed):
            user_from_api_key(bad, scope="v1")
    ApiKey.objects.filter(pk=row.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(AuthenticationFailed, match="expired"):
        user_from_api_key(key, scope="v1")
    _, live = _key(user)
    user.is_active = False
    user.save()
    with pytest.raises(AuthenticationFailed):
        user_from_api_key(live, scope="v1")


@pytest.mark.usefixtures("scripted_provider")
async def test_an_open_stream_ends_once_its_key_is_revoked(user, settings):
    settings.NEXUS_AUTH_RECHECK_SECONDS = 0.2
    agent = await db(make_agent)(owner=user, reply="x" * 400, chunks=400, delay=0.05)
    row, key = await db(_key)(user)
    from core.apikeys import api_key_revoke

    body = {"model": str(agent.pk), "messages": [{"role": "user", "content": "hi"}], "stream": True}
    task = asyncio.ensure_future(_post(key, "/v1/chat/completions", body))  # the whole stream, when it ends

    def running() -> bool:
        from runs.models import Run

        return Run.objects.filter(status="running").exists()

    while not await db(running)():
        await asyncio.sleep(0.05)
    await db(api_key_revoke)(user=user, key_id=row.pk)
    response = await task
    assert response.status_code == 200
    text = response.text
    assert "revoked" in text and "data: [DONE]" not in text, text[-300:]
    assert text.count('"content":"x"') < 400  # ended before the reply did
    # the run itself goes on (a stream's end stops nothing): stopped here, the normal way
    from runs.stopping import run_stop

    stopped = await run_stop(user=user, conversation_id=response.headers["X-Conversation-Id"], run_id=None)
    assert len(stopped) == 1
    while await db(running)():
        await asyncio.sleep(0.05)


BAD_CHAT = [
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "M", "messages": "hi"}, "messages"),
    ({"model": "M", "messages": [5]}, "messages.0"),
    ({"model": "M", "messages": [{"role": "robot", "content": "hi"}]}, "messages.0"),
    ({"model": "M", "messages": [{"role": "user", "content": 5}]}, "messages.0"),
    ({"model": "M", "messages": [{"role": "user", "content": [5]}]}, "messages.0"),
    ({"model": "M", "messages": [{"role": "user", "content": "a\x00b"}]}, "messages.0"),
    ({"model": "M", "messages": [{"role": "user", "content": "  "}]}, "messages"),
    ({"model": "M", "messages": [{"role": "tool", "content": "1"}]}, "messages.0"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "stream_options": 1}, "stream_options"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": {}}, "tools"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "web"}]}, "tools.0"),
    (
        {"model": "M", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
        "tools.0",
    ),
    (
        {
            "model": "M",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "not a name!"}}],
        },
        "tools",
    ),
]
BAD_RESPONSES = [
    ({"model": "M"}, "input"),
    ({"model": "M", "input": []}, "input"),
    ({"model": "M", "input": [5]}, "input.0"),
    ({"model": "M", "input": [{"type": "image"}]}, "input.0"),
    ({"model": "M", "input": [{"role": "robot", "content": "x"}]}, "input.0"),
    ({"model": "M", "input": [{"role": "user", "content": [{"type": "input_image"}]}]}, "input.0"),
    ({"model": "M", "input": "hi", "instructions": 5}, "instructions"),
    ({"model": "M", "input": "hi", "store": "no"}, "store"),
    ({"model": "M", "input": "hi", "previous_response_id": 5}, "previous_response_id"),
    ({"model": "M", "input": "hi", "previous_response_id": "resp_nope"}, "previous_response_id"),
    ({"model": "M", "input": "hi", "previous_response_id": "resp_" + "0" * 32}, "previous_response_id"),
    ({"model": "M", "input": [{"type": "function_call_output", "output": "1"}]}, "input.0"),
]


@pytest.mark.usefixtures("scripted_provider")
async def test_bad_bodies_are_4xx_in_openai_shape_and_start_nothing(user):
    agent = await db(make_agent)(owner=user, reply="ok", chunks=1)
    _, key = await db(_key)(user)
    before = await db(_conversations)()
    cases = [("/v1/chat/completions", b, p) for b, p in BAD_CHAT]
    cases += [("/v1/responses", b, p) for b, p in BAD_RESPONSES]
    for path, body, param in cases:
        body = {**body, "model": str(agent.pk)} if body.get("model") == "M" else body
        response = await _post(key, path, body)
        assert response.status_code in (400, 404), (path, body, response.status_code, response.text)
        error = response.json()["error"]
        assert set(error) >= {"message", "type", "param", "code"}, error
        assert error["param"] == param, (body, error)
    assert await db(_conversations)() == before


async def test_a_wrong_method_or_path_is_an_openai_error(user):
    from nexus.asgi import application

    _, key = await db(_key)(user)
    transport = httpx.ASGITransport(app=application)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as http:
        wrong = await http.get("/v1/chat/completions", headers=headers)
        assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"
        assert wrong.json()["error"]["code"] == "method_not_allowed"
        missing = await http.post("/v1/embeddings", json={}, headers=headers)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.usefixtures("scripted_provider")
async def test_an_api_scoped_key_works_on_the_async_api_endpoints_too(user):
    agent = await db(make_agent)(owner=user, reply="ok", chunks=1)
    _, api_key = await db(_key)(user, scopes=["v1", "api"])
    _, v1_only = await db(_key)(user)
    body = {"agent_id": str(agent.pk), "message": "hi"}
    answered = await _post(api_key, "/api/invoke/", body)
    assert answered.status_code == 200 and answered.json()["response"] == "ok", answered.text
    refused = await _post(v1_only, "/api/invoke/", body)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden", refused.text
    assert (await _post("nx-bad.key", "/api/invoke/", body)).status_code == 401
