"""Resume through every door, against real daphne (issue 12, item 1): ``?last_seq=`` on the URL,
``initialize`` with ``last_seq`` on ``/ws/agent/`` and on ``/ws/conversations/{id}/``, ``resume``,
and a second ``initialize`` without ``last_seq``, each 30 times while a reply streams at 200
tokens/s from the loopback fake OpenAI server through the real ``openai`` SDK.

Two topologies: embedded (one daphne, runs inline, in-memory log and layer, SQLite) and cluster
(two daphne, two workers, Redis, PostgreSQL). Every trial checks what a client relies on: the
socket's seqs only go up, the events after the position it asked for are all there, once, and the
reply assembled from them is the stored one, byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.fakes import FakeServerProcess, Reply
from tests.realtime_procs.cluster import Cluster, Socket

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

TRIALS = 30
TOKENS_PER_S = 200
ROUNDS = 3  # one reply per mode and round, TRIALS // ROUNDS clients asking during each
WORDS = 5000  # 25 s at most: each reply is stopped once its clients asked
STEP_CHARS = 120  # client i of a round asks once the reply has (i + 1) * STEP_CHARS characters
LIVE_AFTER = 30  # events that go by after the last client asked, before the stop
# Multi-byte characters: the assembled text must equal the stored one byte for byte.
TEXT = " ".join(f"w{i}{'éß€😀'[i % 4]}" for i in range(WORDS))
MODES = ("url", "agent_initialize", "conversation_initialize", "resume", "second_initialize")
LIMITS = {
    "NEXUS_WS_MAX_SOCKETS_PER_USER": "500",
    "NEXUS_WS_MESSAGES_PER_MINUTE": "100000",
    "NEXUS_JWT_ACCESS_MINUTES": "60",
}


@pytest.fixture(scope="module")
def fake_openai():
    with FakeServerProcess("openai") as fake:
        fake.script(default=Reply(text=TEXT, tokens_per_s=TOKENS_PER_S))
        yield fake


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("embedded"), None, extra_env=LIMITS)
    try:
        cluster.start(webs=1, workers=0)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def clustered(tmp_path_factory, redis_server_url, postgres_url):
    cluster = Cluster(
        tmp_path_factory.mktemp("clustered"), redis_server_url, extra_env=LIMITS, database_url=postgres_url
    )
    try:
        cluster.start(webs=2, workers=2)
        yield cluster
    finally:
        cluster.stop()


class Reference:
    """A socket that watches the whole reply from before it starts; trials wait on its progress."""

    def __init__(self, socket: Socket) -> None:
        self.socket = socket
        self.text_length = 0
        self.last_seq = 0
        self.finished: dict[str, Any] | None = None
        self.first_seq = 0  # its session_state's last_seq: it holds every event after it
        self.run_id = ""
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []

    async def read(self) -> None:
        while self.finished is None:
            frame = await self.socket.recv(timeout=60)
            if "seq" in frame:
                self.last_seq = frame["seq"]
            if frame["type"] == "streaming_chunk":
                self.text_length += len(frame["data"]["chunk"])
            if frame["type"] == "run_finished" and frame["data"]["run_id"] == self.run_id:
                self.finished = frame
            for waiter in [w for w in self._waiters if self.finished or w[0]()]:
                self._waiters.remove(waiter)
                waiter[1].set_result(None)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Until ``condition`` holds (or the run is over)."""
        if self.finished or condition():
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((condition, future))
        await future


@dataclass
class Trial:
    mode: str
    index: int
    position: int = 0  # the position the client asked for
    bound_at: int | None = None  # the session_state last_seq of a socket bound at connect
    socket: Socket | None = None
    asked: asyncio.Future[None] | None = None  # done once the client asked
    seqs: list[int] = field(default_factory=list)
    stalled: bool = False  # no run_finished within a minute


async def _trial(cluster: Cluster, trial: Trial, conversation: str, token: str, ref: Reference, rng) -> None:
    assert trial.asked is not None
    try:
        await _ask(cluster, trial, conversation, token, ref, rng)
    finally:
        if not trial.asked.done():
            trial.asked.set_result(None)
    await _read_to_the_end(trial, ref)
    await trial.socket.close()


async def _ask(cluster: Cluster, trial: Trial, conversation: str, token: str, ref: Reference, rng) -> None:
    web = trial.index % len(cluster.web)
    path = f"/ws/conversations/{conversation}/"
    step = (trial.index % (TRIALS // ROUNDS) + 1) * STEP_CHARS
    await ref.until(lambda: ref.text_length >= step)
    asked = max(ref.first_seq, ref.last_seq - rng.randint(0, 40))
    if trial.mode in ("url", "second_initialize"):
        trial.socket = await _open(cluster.ws(f"{path}?last_seq={asked}", web=web), token)
        trial.position = asked
        if trial.mode == "second_initialize":
            await trial.socket.until("session_state")
            if not trial.socket.events():
                await _until_event(trial.socket)
            await trial.socket.send({"type": "initialize", "data": {"conversation_id": conversation}})
    elif trial.mode == "agent_initialize":
        trial.socket = await _open(cluster.ws("/ws/agent/", web=web), token)
        await trial.socket.until("connection")
        trial.position = asked
        await trial.socket.send(
            {"type": "initialize", "data": {"conversation_id": conversation, "last_seq": asked}}
        )
    else:
        # Bound at connect, the socket delivers live events from its session_state at once; a
        # client that already holds events up to a later seq (from another connection) asks for it.
        trial.socket = await _open(cluster.ws(path, web=web), token)
        trial.bound_at = (await trial.socket.until("session_state"))["data"]["last_seq"]
        trial.position = max(asked, trial.bound_at)
        if trial.mode == "resume":
            await trial.socket.send({"type": "resume", "data": {"last_seq": trial.position}})
        else:
            await trial.socket.send(
                {"type": "initialize", "data": {"conversation_id": conversation, "last_seq": trial.position}}
            )


async def _read_to_the_end(trial: Trial, ref: Reference) -> None:
    """Read until the socket sent the run's last event (or, if the client asked for a position
    past it, until the run is over)."""
    assert trial.socket is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        events = trial.socket.events()
        trial.seqs = [e["seq"] for e in events]
        if ref.finished is not None and max([trial.position, *trial.seqs]) >= ref.finished["seq"]:
            return
        if loop.time() > deadline:
            trial.stalled = True
            return
        with contextlib.suppress(TimeoutError):
            await trial.socket.recv(timeout=0.5)


async def _open(url: str, token: str) -> Socket:
    # No client keepalive: on a loaded machine a late pong is not what this test is about.
    return await Socket.open(url, token, ping_interval=None)


async def _until_event(socket: Socket) -> None:
    while "seq" not in await socket.recv(timeout=30):
        pass


def _violations(trial: Trial, ref: Reference, stored: str, message_id: str) -> list[str]:
    """What this trial's client saw that breaks the promise (empty: nothing)."""
    assert trial.socket is not None and ref.finished is not None
    out = []
    seqs, position, end = trial.seqs, trial.position, ref.finished["seq"]
    name = f"{trial.mode}#{trial.index} (asked {position}, bound at {trial.bound_at})"
    if position >= end:
        return [f"{name}: asked after the reply ended (at {end}); the machine is too slow for this test"]
    if trial.stalled:
        frames = [(f["type"], f.get("seq")) for f in trial.socket.frames]
        return [f"{name}: no run_finished within a minute; first frames {frames[:12]}, last {frames[-5:]}"]
    if any(b <= a for a, b in itertools.pairwise(seqs)):
        out.append(f"{name}: seqs not strictly increasing: {seqs}")
    after = [s for s in seqs if s > position]
    if after != list(range(position + 1, end + 1)):
        out.append(f"{name}: the events after the position are not exactly {position + 1}..{end}: {seqs}")
    before = [s for s in seqs if s <= position]
    if before and (trial.bound_at is None or min(before) <= trial.bound_at):
        out.append(f"{name}: events at or below the position it asked for: {before}")
    if any(f["type"] == "info" and f["data"].get("code") == "resync" for f in trial.socket.frames):
        out.append(f"{name}: a resync, though the log covers every position")
    held = [e for e in ref.socket.events() if e["seq"] <= position]
    text = _text(held, message_id) + _text(
        [e for e in trial.socket.events() if e["seq"] > position], message_id
    )
    if text.encode() != stored.encode():
        out.append(f"{name}: the assembled reply differs from the stored one")
    return out


def _text(events: list[dict[str, Any]], message_id: str) -> str:
    return "".join(
        e["data"]["chunk"]
        for e in events
        if e["type"] == "streaming_chunk" and e["data"]["messageId"] == message_id
    )


async def _mode(
    cluster: Cluster, fake: FakeServerProcess, mode: str, trials: list[Trial], seed: int
) -> list[str]:
    """Clients asking for a position in one way while one reply streams. The reply is stopped once
    every client asked and a few more events went by, so every request lands mid-stream however
    slow the machine is."""
    rng = random.Random(seed)
    user, token = await cluster.user()
    _, conversation = await cluster.openai_conversation(user, fake.base_url)
    ref = Reference(await _open(cluster.ws(f"/ws/conversations/{conversation}/"), token))
    ref.first_seq = (await ref.socket.until("session_state"))["data"]["last_seq"]
    await ref.socket.send({"type": "user_message", "data": {"content": "Stream, please."}})
    ref.run_id = (await ref.socket.until("ack"))["data"]["run_id"]
    reading = asyncio.create_task(ref.read())
    loop = asyncio.get_running_loop()
    for trial in trials:
        trial.asked = loop.create_future()
    clients = [asyncio.create_task(_trial(cluster, t, conversation, token, ref, rng)) for t in trials]
    try:
        await asyncio.gather(*(t.asked for t in trials if t.asked is not None))
        mark = ref.last_seq
        await ref.until(lambda: ref.last_seq >= mark + LIVE_AFTER)
        await ref.socket.send({"type": "stop", "data": {"run_id": ref.run_id}})
        await asyncio.gather(*clients)
        await reading
    finally:
        reading.cancel()
        for client in clients:
            client.cancel()
        await ref.socket.close()
        for trial in trials:
            if trial.socket is not None:
                await trial.socket.close()
    assert ref.finished is not None and ref.finished["data"]["status"] == "stopped", ref.finished
    message_id = next(e for e in ref.socket.events() if e["type"] == "run_started")["data"]["message_id"]
    stored = (await cluster.db.acall("message", message_id=message_id))["content"]
    assert stored and TEXT.startswith(stored)
    assert _text(ref.socket.events(), message_id) == stored
    return [v for trial in trials for v in _violations(trial, ref, stored, message_id)]


@pytest.mark.parametrize("topology", ["embedded", "clustered"])
async def test_every_way_of_asking_for_a_position_delivers_each_event_once_in_order(
    request, topology, fake_openai
):
    cluster: Cluster = request.getfixturevalue(topology)
    violations, per_round = [], TRIALS // ROUNDS
    for round_ in range(ROUNDS):
        rounds = [
            _mode(
                cluster,
                fake_openai,
                mode,
                [Trial(mode, round_ * per_round + i) for i in range(per_round)],
                seed,
            )
            for seed, mode in enumerate(MODES, start=round_ * len(MODES))
        ]
        violations += [v for found in await asyncio.gather(*rounds) for v in found]
    assert not violations, "\n".join(violations[:20]) + f"\n({len(violations)} in all)\n{cluster.logs()}"
