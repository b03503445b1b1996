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
