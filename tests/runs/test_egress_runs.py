"""Provider egress through the whole run path (socket -> engine -> the real openai adapter ->
a loopback server that records what reaches it): an ordinary user's agent cannot carry the
operator's key to a host of its choosing, nor reach loopback, private or metadata addresses, nor
and the error frame quotes nothing the upstream said. (Redirects: the adapters' clients follow
none; the transport checks every hop of a client that does, see tests/core/test_egress.py.)

The agents are rows made directly (as rows saved before only staff could set ``base_url`` and
``api_key_env``): the REST refusal of such fields is tested in tests/api/test_agent_endpoints.py.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from tests.factories import make_conversation
from tests.fakes import FakeOpenAI, Reply
from tests.fakes.server import RecordedRequest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

OPERATOR_KEY = "sk-operator-secret-7f3a9c2e5b1d"
FAST = {"timeouts": {"connect": 1, "first_token": 5, "between_chunks": 5, "total": 8}}


@pytest.fixture
def operator_key(settings):
    settings.NEXUS_PROVIDER_API_KEYS = {"OPENAI_API_KEY": OPERATOR_KEY}
    settings.OPENAI_BASE_URL = ""  # the key's host is api.openai.com, its default
    settings.NEXUS_KEY_HOSTS = {}


@pytest.fixture
def capture():
    with FakeOpenAI() as server:
        yield server


def _agent(owner, base_url: str, **config):
    from agents.models import Agent

    return Agent.objects.create(
        owner=owner,
        name="Mallory's agent",
        provider="openai",
        model="gpt-4o-mini",
        base_url=base_url,
        config={"api_key_env": "OPENAI_API_KEY", **FAST, **config},
    )


async def _run(connect, user, base_url: str) -> dict:
    """Send one message to a new agent on ``base_url``; the run_finished frame, the error frame
    (if any) as ``["error"]``."""
    agent = await database_sync_to_async(_agent)(user, base_url)
    conversation = await database_sync_to_async(make_conversation)(user, agent)
    client = await connect(f"/ws/conversations/{conversation.pk}/", user=user)
    await client.until("session_state")
    await client.send({"type": "user_message", "data": {"content": "hi", "client_message_id": "m1"}})
    finished = await client.until("run_finished", timeout=30)
    errors = [f for f in client.frames if f["type"] == "error"]
    finished["error"] = errors[-1]["data"] if errors else None
    await client.close()
    return finished


def _carried(request: RecordedRequest, secret: str) -> bool:
    return any(secret in value for value in request.headers.values()) or secret.encode() in request.body


async def test_a_users_agent_never_carries_the_operator_key_to_its_own_host(
    connect, user, operator_key, settings, capture
):
    capture.script(Reply(text="thanks for the key"))
    finished = await _run(connect, user, capture.base_url)
    assert finished["data"]["status"] == "completed"  # the host was reachable (loopback allowed)...
    assert len(capture.requests) == 1
    assert not _carried(capture.requests[0], OPERATOR_KEY)  # ...and got no key
    assert capture.requests[0].headers["authorization"] == "Bearer not-needed"
    # Once the operator binds the key to that host, it is sent there.
    settings.NEXUS_KEY_HOSTS = {"OPENAI_API_KEY": [f"127.0.0.1:{capture.port}"]}
    capture.script(Reply(text="ok"))
    finished = await _run(connect, user, capture.base_url)
    assert finished["data"]["status"] == "completed"
    assert capture.requests[1].headers["authorization"] == f"Bearer {OPERATOR_KEY}"


@pytest.fixture
def no_egress_exceptions(settings):
    settings.NEXUS_EGRESS_ALLOW = []


@pytest.mark.parametrize(
    "where",
    [
        "127.0.0.1:{port}",
        "localhost:{port}",
        "[::1]:{port6}",
        "10.0.0.1",
        "169.254.169.254",
        "[::ffff:127.0.0.1]:{port}",
    ],
)
async def test_a_users_agent_cannot_reach_loopback_private_or_metadata_addresses(
    connect, user, operator_key, no_egress_exceptions, capture, where
):
    with FakeOpenAI(host="::1") as capture6:
        url = f"http://{where.format(port=capture.port, port6=capture6.port)}/v1"
        finished = await _run(connect, user, url)
        assert finished["data"]["status"] == "failed"
        error = finished["error"]
        assert error["code"] == "provider_error" and error["kind"] == "egress_denied", error
        assert "egress policy" in error["message"]
        for shown in ("127.0.0.1", "::1", "10.0.0.1", "169.254", "localhost", "loopback"):
            assert shown not in error["message"]  # what a name resolves to is not the user's business
        assert capture.requests == [] and capture6.requests == []  # no connection was made


async def test_an_upstream_error_body_is_not_echoed_to_the_user(connect, user, operator_key, capture):
    capture.script(Reply(status=400, error_message="db01.internal:5432 password authentication failed"))
    finished = await _run(connect, user, capture.base_url)
    error = finished["error"]
    assert error["kind"] == "bad_request"
    assert "db01" not in error["message"] and "password" not in error["message"]
    assert error["message"] == "openai: HTTP 400 (the provider refused the request)"
