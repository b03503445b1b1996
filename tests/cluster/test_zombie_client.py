"""A zombie client: it opens a socket on a conversation, then never reads again while long replies
stream into that conversation at full speed. The web process must not hold what the zombie does not
read (its memory stays bounded), and the other clients of the conversation get the replies whole
and on time.

What the server does with such a socket (docs/protocol.md, "Slow and dead readers"): once more
than ``NEXUS_WS_MAX_SEND_BUFFER_BYTES`` wait in its send buffer, it drops the connection; the
client, if it is alive after all, reconnects and resumes from its ``last_seq``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
from urllib.parse import urlsplit

import psutil
import pytest

from tests.cluster.conftest import conversations_spec, runs_of, scripted_agent, stored_replies
from tests.cluster.wsclient import Watcher

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(240)]

MiB = 1024 * 1024
PIECE = "zombie-food " * 90  # 1,080 characters
REPEAT = 925  # a reply of 1 MB (999,000 characters: under NEXUS_MAX_REPLY_CHARS, 1,000,000)...
CHUNKS = 100  # ...in chunks of about 10 KB
RUNS = 40  # about 80 MB of frames for the zombie: the chunks and the agent_message of each reply
RSS_BOUND = 50 * MiB


class Zombie:
    """A WebSocket client that completes the handshake and then never reads: a plain TCP socket
    with a small receive buffer, so the kernel holds little for it either."""

    def __init__(self, ws_base: str, path: str, token: str) -> None:
        parts = urlsplit(ws_base)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((parts.hostname, parts.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)  # byte by byte: not one byte of the frames after it
        assert head.startswith(b"HTTP/1.1 101"), head

    def is_dropped(self) -> bool:
        """Read everything the server still has for us: True if it ends in EOF or a reset (the
        server let go of the socket), False if the connection is still open."""
        self.sock.settimeout(5)
        try:
            while self.sock.recv(1 << 20):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


async def _sample_rss(process: psutil.Process, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.1)


async def test_a_client_that_stops_reading_does_not_grow_the_server_and_does_not_slow_the_others(cluster):
    agent = scripted_agent("firehose", reply=PIECE, chunks=CHUNKS, delay=0)
    agent["config"]["repeat"] = REPEAT
    made = cluster.fixtures(conversations_spec(1, agent))
    [conversation] = made["conversations"]
    web = cluster.web_names[0]
    ws_base = cluster.ws_url(web)
    daphne = psutil.Process(cluster.pids()[web])
    reader = Watcher(conversation_id=conversation["id"], token=conversation["token"], name="reader")
    await reader.connect(ws_base)
    await reader.wait_frame("session_state")

    # One reply before the zombie arrives: the process's baseline includes everything a reply
    # costs it when every client reads.
    await reader.send("user_message", content="warm up", client_message_id="warm")
    await reader.wait_for(lambda w: len(w.seen("run_finished")) == 1, timeout=60, what="the warm-up reply")
    baseline = daphne.memory_info().rss

    zombie = await asyncio.to_thread(
        Zombie, ws_base, f"/ws/conversations/{conversation['id']}/", conversation["token"]
    )
    peak = [baseline]
    stop_sampling = asyncio.Event()
    sampler = asyncio.get_running_loop().create_task(_sample_rss(daphne, peak, stop_sampling))
    try:
        for i in range(RUNS):
            await reader.send("user_message", content=f"story {i}", client_message_id=f"m{i}")
            await reader.wait_for(
                lambda w, n=i + 2: len(w.seen("run_finished")) == n, timeout=60, what=f"reply {i}"
            )
    finally:
        stop_sampling.set()
        await sampler
    grown = peak[0] - baseline
    dropped = await asyncio.to_thread(zombie.is_dropped)
    zombie.close()
    await reader.close()

    runs = runs_of(cluster, conversation["id"])
    assert [r["status"] for r in runs] == ["completed"] * (RUNS + 1), runs
    replies = stored_replies(cluster, conversation["id"])
    assert len(replies) == RUNS + 1
    assert reader.violations == [], reader.violations[:5]
    assert reader.connects == 1  # the reader was never dropped with the zombie
    for message_id, status, content in replies:
        assert status == "complete" and content == PIECE * REPEAT
        assert reader.text[message_id] == content  # every chunk, once, in order
        assert reader.final[message_id]["content"] == content
    print(f"daphne RSS grew {grown / MiB:.1f} MiB over {baseline / MiB:.1f} MiB; zombie dropped: {dropped}")
    assert grown < RSS_BOUND, f"the web process grew {grown / MiB:.0f} MiB for a client that reads nothing"
    assert dropped, "the server still holds a socket that has not read for ~100 MB of frames"
