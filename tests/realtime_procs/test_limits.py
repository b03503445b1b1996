"""Limits, close codes and robustness as a plain ``websockets`` client sees them, against real
daphne processes sharing Redis (issue 8, Done means)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
import redis.asyncio

from tests.realtime_procs.cluster import Cluster, Socket, reply_text

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.timeout(120)]

SLOW_REPLY = " ".join(f"w{i}" for i in range(400))


async def _answers(sock: Socket, expected: int, timeout: float = 30.0) -> tuple[list[dict], int | None]:
    """The control answers (ack / error frames, no seq) to ``expected`` frames, until the server
    closes the socket; the close code (None if it stayed open)."""
    answers: list[dict] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with contextlib.suppress(Exception):
        while len(answers) < expected:
            frame = await sock.recv(max(0.01, deadline - loop.time()))
            if "seq" not in frame and frame["type"] in ("ack", "error"):
                answers.append(frame)
    return answers, sock.ws.close_code


async def test_two_sockets_on_two_processes_share_one_limit_of_60_messages_a_minute(cluster):
    user, token = await cluster.user()
    # reject: while the first reply streams, the other accepted messages get `conflict`, so one run only
    _, conversation = await cluster.scripted_conversation(
        user, reply=SLOW_REPLY, chunks=400, delay=0.05, settings={"double_text": "reject"}
    )
    path = f"/ws/conversations/{conversation}/"
    sockets = [await Socket.open(cluster.ws(path, web=web), token) for web in (0, 1)]
    try:
        for sock in sockets:
            await sock.until("session_state")

        async def push(sock: Socket, tag: str) -> None:
            for i in range(60):
                with contextlib.suppress(Exception):  # the server may close it (4004) meanwhile
                    await sock.send({"type": "user_message", "data": {"content": f"{tag} {i}"}})

        await asyncio.gather(*(push(sock, tag) for sock, tag in zip(sockets, "ab", strict=True)))
        results = await asyncio.gather(*(_answers(sock, 60) for sock in sockets))
        accepted = rate_limited = 0
        for answers, _code in results:
            for frame in answers:
                code = frame["data"].get("code") if frame["type"] == "error" else "ack"
                if code in ("ack", "conflict"):
                    accepted += 1  # past the limiter: stored (ack) or refused by the policy
                else:
                    assert code == "rate_limited", frame
                    assert frame["data"]["retry_after"] > 0
                    rate_limited += 1
        assert accepted == 60, f"{accepted} accepted of 120"
        assert rate_limited >= 10
        # a socket that keeps pushing past the limit is closed with 4004
        assert 4004 in [code for _, code in results]
    finally:
        async with httpx.AsyncClient(base_url=cluster.http(0), timeout=10) as http:
            await http.post(
                f"/api/conversations/{conversation}/stop/", headers={"Authorization": f"Bearer {token}"}
            )
        for sock in sockets:
            await sock.close()


async def test_the_sixth_socket_of_a_user_across_processes_is_closed_with_4004(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user)
    path = f"/ws/conversations/{conversation}/"
    opened = []
    try:
        for i in range(5):
            sock = await Socket.open(cluster.ws(path, web=i % 2), token)
            await sock.until("connection")
            opened.append(sock)
        sixth = await Socket.open(cluster.ws(path, web=1), token)
        assert await sixth.close_code() == 4004
        error = next(f for f in sixth.frames if f["type"] == "error")
        assert error["data"]["code"] == "rate_limited"
        await opened.pop().close()  # a closed socket frees its slot
        await asyncio.sleep(0.3)
        again = await Socket.open(cluster.ws(path, web=1), token)
        opened.append(again)
        assert (await again.recv())["type"] == "connection"
    finally:
        for sock in opened:
            await sock.close()


async def test_a_bad_token_gets_4003_and_another_users_conversation_4001(cluster):
    owner, _ = await cluster.user()
    _, other_token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(owner)
    path = f"/ws/conversations/{conversation}/"
    bad = await Socket.open(cluster.ws(path, web=0), "not-a-jwt")
    assert await bad.close_code() == 4003
    assert bad.frames[0]["type"] == "error" and bad.frames[0]["data"]["code"] == "forbidden"
    nosy = await Socket.open(cluster.ws(path, web=1), other_token)
    assert await nosy.close_code() == 4001
    error = next(f for f in nosy.frames if f["type"] == "error")
    assert error["data"]["code"] == "not_found"  # never a hint that the conversation exists
    assert not any(f["type"] == "session_state" for f in nosy.frames)


async def test_ten_thousand_malformed_frames_get_ten_thousand_error_frames(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user)
    sock = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token)
    malformed: list[str | bytes] = [
        "{not json",
        "[1, 2, 3]",
        '"a string"',
        '{"type": "no_such_frame"}',
        '{"data": {}}',
        '{"type": "user_message", "data": {"content": 42}}',
        '{"type": "resume", "data": {"last_seq": "yesterday"}}',
        '{"type": "tool_result", "data": {}}',
        b"\x00\x01binary",
        "",
    ]
    total = 10_000
    try:
        await sock.until("session_state")
        errors: list[dict] = []

        async def read() -> None:
            while len(errors) < total:
                frame = await sock.recv(timeout=30)
                if frame["type"] == "error":
                    errors.append(frame)

        reader = asyncio.create_task(read())
        for i in range(total):
            await sock.ws.send(malformed[i % len(malformed)])
        await asyncio.wait_for(reader, 60)
        assert len(errors) == total
        codes = {e["data"]["code"] for e in errors}
        assert codes <= {"invalid_json", "unknown_type", "validation_error"}, codes
        # the socket and the server are still fine
        await sock.send({"type": "ping"})
        await sock.until("pong")
        await sock.send({"type": "user_message", "data": {"content": "Still there?"}})
        assert (await sock.until("ack"))["data"]["message_id"]
        assert cluster.web[0].alive()
        fresh = await Socket.open(cluster.ws(f"/ws/conversations/{conversation}/", web=0), token)
        assert (await fresh.recv())["type"] == "connection"
        await fresh.close()
    finally:
        await sock.close()


async def test_sockets_idle_longer_than_redis_socket_timeouts_are_not_dropped(cluster):
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user, reply="After the quiet.", chunks=3)
    path = f"/ws/conversations/{conversation}/"
    sockets = [await Socket.open(cluster.ws(path, web=web), token) for web in (0, 1)]
    try:
        for sock in sockets:
            await sock.until("session_state")
        await asyncio.sleep(7)  # redis-py's 5 s socket timeout would have ended a blocking read by now
        for sock in sockets:
            assert sock.ws.close_code is None
            await sock.send({"type": "ping"})
            await sock.until("pong")
        await sockets[1].send({"type": "user_message", "data": {"content": "Hello again."}})
        run_id = (await sockets[1].until("ack"))["data"]["run_id"]
        for sock in sockets:
            await sock.until("run_finished", timeout=15, run_id=run_id)
            message_id = next(e for e in sock.events() if e["type"] == "run_started")["data"]["message_id"]
            assert reply_text(sock.events(), message_id) == "After the quiet."
        assert not [f for s in sockets for f in s.frames if f["type"] == "error"]
        # and nothing reconnected behind the scenes (the event log's tail, the control channel)
        for proc in cluster.web:
            log = proc.output()
            assert "lost Redis" not in log and "receive failed" not in log, log[-2000:]
    finally:
        for sock in sockets:
            await sock.close()


@pytest.fixture(scope="module")
def fast_ping_cluster(tmp_path_factory, redis_server_url):
    """One daphne whose keepalive ticks every second (no worker: no runs here)."""
    cluster = Cluster(
        tmp_path_factory.mktemp("fast-ping"), redis_server_url, extra_env={"NEXUS_WS_PING_INTERVAL": "1"}
    )
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


async def test_busy_sockets_keep_their_place_in_the_socket_limit(fast_ping_cluster, redis_url):
    cluster = fast_ping_cluster
    user, token = await cluster.user()
    _, conversation = await cluster.scripted_conversation(user)
    path = f"/ws/conversations/{conversation}/"
    opened = [await Socket.open(cluster.ws(path), token) for _ in range(5)]
    try:
        for sock in opened:
            await sock.until("connection")
        # Make every entry look as old as a dead process's (120 s without a refresh) ...
        client = redis.asyncio.Redis.from_url(cluster.redis_url)
        key = f"{cluster.prefix}:ws:sockets:{user}"
        entries = await client.zrange(key, 0, -1)
        assert len(entries) == 5
        await client.zadd(key, {member: time.time() - 1000 for member in entries})
        # ... while the clients stay busy: the keepalive must refresh them anyway
        for _ in range(8):
            for sock in opened:
                await sock.send({"type": "ping"})
            await asyncio.sleep(0.3)
        scores = [score for _, score in await client.zrange(key, 0, -1, withscores=True)]
        await client.aclose()
        assert all(score > time.time() - 10 for score in scores), scores
        sixth = await Socket.open(cluster.ws(path), token)
        assert await sixth.close_code() == 4004
    finally:
        for sock in opened:
            await sock.close()
