"""Provider faults end to end: a worker streams from a loopback fake OpenAI server (a subprocess
speaking the real SSE wire format) through the real ``openai`` SDK adapter, and a WebSocket client
on a web process sees the outcome.

Every agent here sets a short between-chunks deadline in its config (``timeouts``), so the stall
case fails in seconds rather than the default 30 s.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass, field

import pytest

from tests.cluster.conftest import close_all, runs_of, stored_replies
from tests.cluster.wsclient import Watcher, run_finished
from tests.fakes import FakeServerProcess, Reply

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

TEXT = "one two three four five six seven eight nine ten"
BETWEEN_CHUNKS_TIMEOUT = 3.0  # each agent's config.timeouts.between_chunks


@dataclass(frozen=True)
class Case:
    id: str
    replies: tuple[Reply, ...]
    requests: int  # chat requests the fake saw (retries included)
    run_status: str
    message_status: str
    error_code: str | None  # the code of the `error` event, None when there is none
    text: str  # "full", "partial" (a non-empty proper prefix) or "empty"
    retry_after: float | None = None
    finished_error: str | None = None  # run_finished.error.code
    timeout: float = 20.0
    extra: dict = field(default_factory=dict)


CASES = [
    Case("429-then-ok", (Reply(status=429, retry_after="1"), Reply(text=TEXT)), 2, "completed", "complete", None, "full"),
    Case("429-three-times", (Reply(status=429, retry_after="1"),) * 3, 3, "failed", "error", "provider_rate_limited", "empty", retry_after=1.0),
    Case("429-retry-after-over-the-cap", (Reply(status=429, retry_after="60"),), 1, "failed", "error", "provider_rate_limited", "empty", retry_after=60.0),
    Case("500-500-then-ok", (Reply(status=500), Reply(status=500), Reply(text=TEXT)), 3, "completed", "complete", None, "full"),
    Case("500-three-times", (Reply(status=500),) * 3, 3, "failed", "error", "provider_unavailable", "empty"),
    Case("stall-after-the-first-tokens", (Reply(text=TEXT, stall_after=4),), 1, "failed", "error", "provider_timeout", "partial", timeout=BETWEEN_CHUNKS_TIMEOUT + 15),
    Case("cut-stream", (Reply(text=TEXT, cut_after=4),), 1, "incomplete", "incomplete", "provider_error", "partial"),
    Case("tcp-reset-mid-stream", (Reply(text=TEXT, drop_after=4),), 1, "incomplete", "incomplete", "provider_error", "partial"),
    Case("malformed-chunk-mid-stream", (Reply(text=TEXT, malformed_after=4),), 1, "failed", "error", "provider_error", "partial"),
    Case("malformed-first-chunk", (Reply(text=TEXT, malformed_after=0),), 1, "failed", "error", "provider_error", "empty"),
]  # fmt: skip


@pytest.fixture(scope="module")
def fakes(cluster):
    """One fake OpenAI server, agent and conversation per case."""
    with contextlib.ExitStack() as stack:
        servers = {case.id: stack.enter_context(FakeServerProcess("openai")) for case in CASES}
        owner = f"faults-{uuid.uuid4().hex[:8]}"
        made = cluster.fixtures(
            {
                "users": [{"username": owner}],
                "agents": [
                    {
                        "name": case.id,
                        "provider": "openai",
                        "model": "gpt-4o-mini",
                        "base_url": servers[case.id].base_url,
                        "config": {"timeouts": {"between_chunks": BETWEEN_CHUNKS_TIMEOUT}},
                    }
                    for case in CASES
                ],
                "conversations": [{"owner": owner, "agents": [case.id]} for case in CASES],
            }
        )
        yield {case.id: (servers[case.id], made["conversations"][i]) for i, case in enumerate(CASES)}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
async def test_the_client_sees_the_right_outcome_and_the_provider_is_not_retried_after_the_first_token(
    cluster, fakes, case
):
    server, conversation = fakes[case.id]
    server.script(*case.replies, default=Reply(text="an unexpected extra request"))
    watcher = Watcher(conversation_id=conversation["id"], token=conversation["token"], name=case.id)
    try:
        await watcher.connect(cluster.ws_urls[0])
        await watcher.wait_frame("session_state")
        await watcher.send("user_message", content="hello")
        finished = await watcher.wait_for(run_finished, timeout=case.timeout, what="run_finished")
    finally:
        await close_all([watcher])

    chat_requests = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert len(chat_requests) == case.requests
    assert finished["status"] == case.run_status
    [run] = runs_of(cluster, conversation["id"])
    assert run["status"] == case.run_status
    [(message_id, status, content)] = stored_replies(cluster, conversation["id"])
    assert status == case.message_status
    assert watcher.final[message_id]["status"] == case.message_status
    assert watcher.final[message_id]["content"] == content
    assert watcher.text[message_id] == content  # the client saw exactly what was stored
    assert watcher.violations == []

    errors = [f["data"] for f in watcher.events if f["type"] == "error"]
    if case.error_code is None:
        assert errors == []
    else:
        [error] = errors
        assert error["code"] == case.error_code
        assert error["details"]["run_id"] == run["id"]
        assert run["error"]["code"] == case.error_code
        assert finished["error"]["code"] == case.error_code
        if case.retry_after is not None:
            assert error["retry_after"] == pytest.approx(case.retry_after, abs=1)
    if case.finished_error is not None:
        assert finished["error"]["code"] == case.finished_error

    if case.text == "full":
        assert content == TEXT
    elif case.text == "partial":
        assert content and content != TEXT and TEXT.startswith(content)
    else:
        assert content == ""
