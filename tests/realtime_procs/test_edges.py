"""The edges of the socket protocol as a plain ``websockets`` client sees them through real daphne
(issue 12): an oversized frame, an expired token at connect, a path Nexus does not serve."""

from __future__ import annotations

import pytest

from tests.realtime_procs.cluster import Socket

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

LIMIT = 1_048_576  # NEXUS_WS_MAX_MESSAGE_BYTES's default


async def test_a_frame_over_one_mib_gets_message_too_large_and_close_4009(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user)
    sock = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token)
    try:
        await sock.until("session_state")
        # exactly the limit still reaches the parser (not JSON: an error frame, the socket stays)
        await sock.send("x" * LIMIT)
        assert (await sock.until("error"))["data"]["code"] == "invalid_json"
        # one byte more: Nexus, not daphne, answers (daphne's own limits sit above Nexus's)
        await sock.send("x" * (LIMIT + 1))
        assert await sock.close_code() == 4009
        error = sock.frames[-1]
        assert error["type"] == "error" and error["data"]["code"] == "message_too_large", sock.frames
        assert str(LIMIT) in error["data"]["message"]
    finally:
        await sock.close()


async def test_an_expired_token_at_connect_gets_4003_not_4002(cluster):
    user, _ = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user)
    assert cluster.db is not None
    expired = await cluster.db.acall("expired_token", user_id=user)
    sock = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=1), expired)
    # 4002 would tell the client to reconnect and resume, which it would do forever with this token
    assert await sock.close_code() == 4003
    assert [f["type"] for f in sock.frames] == ["error"]
    assert sock.frames[0]["data"]["code"] == "forbidden"
    assert "expired" in sock.frames[0]["data"]["message"].lower()


@pytest.mark.parametrize(
    "path", ["/api/agent", "/nope", "/", "/ws/conversations/not-a-uuid/", "/ws/agent/extra/"]
)
async def test_a_path_nexus_does_not_serve_is_refused_with_not_found_and_4000(cluster, path):
    _, token = await cluster.user()
    for credentials in (token, None):  # the same answer with or without credentials
        sock = await Socket.open(cluster.ws(path, web=0), credentials)  # the handshake succeeds: no 500
        assert await sock.close_code() == 4000
        assert [f["type"] for f in sock.frames] == ["error"], sock.frames
        assert sock.frames[0]["data"]["code"] == "not_found"
        assert path in sock.frames[0]["data"]["message"]
