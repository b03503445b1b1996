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
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from websockets.sync.client import connect as connect_sync

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
    trials_failed = Counter(
        v.split(" ", 1)[0].split("#")[0] for v in {v.split(" ", 1)[0] for v in violations}
    )
    assert not violations, (
        f"trials that failed, by way of asking (of {TRIALS} each): {dict(trials_failed)}\n"
        + "\n".join(violations[:20])
        + f"\n({len(violations)} in all)\n{cluster.logs()}"
    )


# -- a random interleaving of clients, requests and a streaming run (Hypothesis) ------------------

STATEFUL_WORDS = 600  # 3 s at 200 tokens/s; each example's run is stopped at its end at the latest


@pytest.fixture(scope="module")
def short_openai():
    with FakeServerProcess("openai") as fake:
        fake.script(default=Reply(text=" ".join(f"s{i}ü" for i in range(STATEFUL_WORDS)), tokens_per_s=200))
        yield fake


class _Client:
    """A plain synchronous ``websockets`` client and what it asked for."""

    def __init__(self, url: str, token: str, *, bound: bool, position: int | None = None) -> None:
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(
            connect_sync(url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=10)
        )
        self.url = url
        self.bound = bound
        self.frames: list[dict[str, Any]] = []
        # Where a gap in its seqs may be: after a position it claimed, or after the last_seq of a
        # session_state it received (a binding without last_seq starts there; so does a resync).
        self.positions: set[int] = set() if position is None else {position}

    def drain(self, timeout: float = 0.0) -> None:
        """Read what has arrived (waiting up to ``timeout`` for the first frame)."""
        while True:
            try:
                raw = self.ws.recv(timeout=timeout)
            except TimeoutError:
                return
            timeout = 0.0
            frame = json.loads(raw)
            self.frames.append(frame)
            if frame["type"] == "session_state":
                self.positions.add(frame["data"]["last_seq"])

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if "seq" in f]

    def until(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:
        """The next frame of this type (read after what was read already)."""
        seen = len(self.frames)
        deadline = time.monotonic() + timeout
        while True:
            found = [f for f in self.frames[seen:] if f["type"] == kind]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no {kind} within {timeout} s"
            self.drain(timeout=0.2)

    def check(self) -> None:
        seqs = self.seqs()
        assert all(b > a for a, b in itertools.pairwise(seqs)), f"{self.url}: a seq again or lower: {seqs}"
        for before, seq in zip([None, *seqs], seqs, strict=False):
            if before is None or seq != before + 1:
                assert seq - 1 in self.positions, (
                    f"{self.url}: seq {seq} after {before} skips events no request explains "
                    f"(positions {sorted(self.positions)}): {seqs}"
                )

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps(frame))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()


class ResumeMachine(RuleBasedStateMachine):
    """Clients come and go and ask for positions in every way while one reply streams; every
    socket's seqs only go up, every skip is one a request explains, and once the run is over
    every bound socket has every event up to the log's last."""

    cluster: Cluster
    fake: FakeServerProcess

    def __init__(self) -> None:
        super().__init__()
        made = self.cluster.db.call("user", username=f"h{uuid.uuid4().hex[:10]}")
        self.token = made["token"]
        agent = self.cluster.db.call(
            "agent",
            owner_id=made["id"],
            provider="openai",
            model="gpt-4o-mini",
            config={},
            base_url=self.fake.base_url,
        )
        self.conversation = self.cluster.db.call("conversation", owner_id=made["id"], agent_ids=[agent])
        # The reply streams for the whole example (unless a client stops it).
        first = _Client(self._path(), self.token, bound=True)
        first.send({"type": "user_message", "data": {"content": "Stream, please."}})
        self.clients: list[_Client] = [first]
        self.head = 0  # the highest seq any client has seen

    def _path(self, query: str = "") -> str:
        return self.cluster.ws(f"/ws/conversations/{self.conversation}/{query}")

    def _pick(self, data: st.DataObject, *, bound: bool = False) -> _Client | None:
        choices = [c for c in self.clients if c.bound or not bound]
        index = data.draw(st.integers(0, 3))  # drawn the same way whatever the state
        return choices[index % len(choices)] if choices else None

    def _seq(self, data: st.DataObject) -> int:
        # Near the latest seq seen, past it now and then (the log does not reach it: a resync).
        return max(0, self.head + data.draw(st.integers(-40, 3)))

    @precondition(lambda self: len(self.clients) < 4)
    @rule(kind=st.sampled_from(["bound", "bound_last_seq", "agent"]), data=st.data())
    def open_a_socket(self, kind: str, data: st.DataObject) -> None:
        if kind == "bound":
            self.clients.append(_Client(self._path(), self.token, bound=True))
        elif kind == "bound_last_seq":
            last_seq = self._seq(data)
            self.clients.append(
                _Client(self._path(f"?last_seq={last_seq}"), self.token, bound=True, position=last_seq)
            )
        else:
            self.clients.append(_Client(self.cluster.ws("/ws/agent/"), self.token, bound=False))

    @rule(with_last_seq=st.booleans(), data=st.data())
    def initialize(self, with_last_seq: bool, data: st.DataObject) -> None:
        client = self._pick(data)
        if client is None:
            return
        body: dict[str, Any] = {"conversation_id": self.conversation}
        if with_last_seq:
            body["last_seq"] = self._seq(data)
            client.positions.add(body["last_seq"])
        client.send({"type": "initialize", "data": body})
        client.bound = True

    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        client = self._pick(data, bound=True)
        if client is not None:
            last_seq = self._seq(data)
            client.positions.add(last_seq)
            client.send({"type": "resume", "data": {"last_seq": last_seq}})

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        client = self._pick(data)
        if client is not None:
            client.drain()
            client.check()
            client.close()
            self.clients.remove(client)

    @rule(data=st.data())
    def stop(self, data: st.DataObject) -> None:
        client = self._pick(data, bound=True)
        if client is not None:
            client.send({"type": "stop", "data": {}})

    @rule(wait=st.sampled_from([0.0, 0.02, 0.1, 0.2]))
    def let_it_stream(self, wait: float) -> None:
        for client in self.clients:
            client.drain(timeout=wait)
            wait = 0.0

    @invariant()
    def seqs_only_go_up_and_every_skip_is_asked_for(self) -> None:
        for client in self.clients:
            client.drain()
            client.check()
            self.head = max([self.head, *client.seqs()])

    def teardown(self) -> None:
        try:
            # The run ends (stopped if it is still going); then the log's last seq is known.
            probe = _Client(self._path(), self.token, bound=True)
            state = probe.until("session_state")
            active = {r["run_id"] for r in state["data"]["active_runs"]}
            if active:
                probe.send({"type": "stop", "data": {}})
            while active:
                active.discard(probe.until("run_finished")["data"]["run_id"])
            probe.close()
            last = _Client(self._path(), self.token, bound=True)
            end = last.until("session_state")["data"]["last_seq"]
            last.close()
            for client in self.clients:
                if not client.bound:
                    continue
                deadline = time.monotonic() + 10
                while max([0, *client.seqs()]) < end and time.monotonic() < deadline:
                    client.drain(timeout=0.2)
                client.check()
                assert max([0, *client.seqs()]) >= end or end in client.positions, (
                    f"{client.url}: stopped at {max([0, *client.seqs()])}, the log ends at {end}"
                )
        finally:
            for client in self.clients:
                client.close()


def test_a_random_interleaving_of_requests_and_a_streaming_run_keeps_every_socket_exact(
    embedded, short_openai
):
    ResumeMachine.cluster = embedded
    ResumeMachine.fake = short_openai
    run_state_machine_as_test(
        ResumeMachine,
        settings=settings(
            max_examples=12,
            stateful_step_count=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            # Timing decides what each step meets, so a failing case does not replay exactly:
            # report the first one found instead of shrinking it.
            phases=[Phase.explicit, Phase.generate],
        ),
    )
