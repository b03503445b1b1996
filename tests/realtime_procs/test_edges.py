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
    "path",
    ["/api/agent/extra", "/nope", "/ws/conversations/not-a-uuid/", "/ws/agent/extra/"],  # "/" is seed 000's
)
async def test_a_path_nexus_does_not_serve_is_refused_with_not_found_and_4000(cluster, path):
    _, token = await cluster.user()
    for credentials in (token, None):  # the same answer with or without credentials
        sock = await Socket.open(cluster.ws(path, web=0), credentials)  # the handshake succeeds: no 500
        assert await sock.close_code() == 4000
        assert [f["type"] for f in sock.frames] == ["error"], sock.frames
        assert sock.frames[0]["data"]["code"] == "not_found"
        assert path in sock.frames[0]["data"]["message"]


async def test_a_frame_the_server_cannot_send_ends_the_socket_with_1011(cluster):
    """A send that fails (here: a web process whose daphne accepts smaller frames than Nexus's
    limit, so a 20 kB chunk is refused by autobahn) ends the connection with ``internal`` and 1011,
    which the client answers by reconnecting and resuming. Before, autobahn refused the
    application's close(1011) too, and the socket stayed open delivering nothing."""
    from tests.procs import PYTHON, Process, free_port, wait_for_http

    port = free_port()
    small = "8192"  # after nexus.serve's own flags: these win
    web = Process(
        [
            *(PYTHON, "-m", "nexus.serve", "-b", "127.0.0.1", "-p", str(port)),
            *("--websocket-max-message-size", small, "--websocket-max-frame-size", small),
        ],
        env=cluster.env,
        log_path=cluster.tmp / f"daphne-small-{port}.log",
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process=web)
        user, token = await cluster.user()
        _, conversation = await cluster.scripted_conversation(user, reply="x" * 20_000, chunks=1)
        sock = await Socket.open(f"ws://127.0.0.1:{port}/ws/conversations/{conversation}/", token)
        try:
            await sock.until("session_state")
            await sock.send({"type": "user_message", "data": {"content": "a long one"}})
            assert await sock.close_code(timeout=30) == 1011
            errors = [f for f in sock.frames if f["type"] == "error"]
            assert [e["data"]["code"] for e in errors] == ["internal"], sock.frames[-3:]
        finally:
            await sock.close()
    finally:
        web.stop()
