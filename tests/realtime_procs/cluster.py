"""A real Nexus cluster for the multi-process tests: two daphne processes and run workers on free
ports, sharing Redis (event log, channel layer, limits) and one database.

The database: when ``DATABASE_URL`` names PostgreSQL (CI runs the suite on it), a throwaway
database created on that server and dropped at the end, because worker mode is what compose runs
on PostgreSQL and its row locks and the one-running-run-per-conversation constraint are what
several processes race on. Without it, a private SQLite file (WAL) in the test's temporary
directory, so the tests run anywhere Redis does. Never the suite's own test database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.procs import PYTHON, ROOT, Process, base_env, manage, start_daphne

SCRIPTED_PLUGIN = "scripted=tests.realtime.scripted.ScriptedProvider"


def throwaway_database(tmp: Path, outer: str | None = None) -> tuple[str, Callable[[], None]]:
    """(DATABASE_URL for the cluster, a function that drops it). ``outer``: the server to use
    (default: the suite's ``DATABASE_URL``); anything but PostgreSQL gives a private SQLite file."""
    outer = os.environ.get("DATABASE_URL", "") if outer is None else outer
    if not outer.startswith(("postgres://", "postgresql://")):
        return f"sqlite:///{tmp / 'cluster.sqlite3'}", lambda: None
    import psycopg

    parts = urlsplit(outer)
    name = f"nexus_procs_{uuid.uuid4().hex[:12]}"
    admin_url = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


class DbTool:
    """The cluster's database, through ``tests.realtime_procs.dbtool`` (one JSON line each way)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._popen = subprocess.Popen(
            [PYTHON, "-m", "tests.realtime_procs.dbtool"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )
        self._lock = threading.Lock()
        self._read()

    def _read(self) -> Any:
        assert self._popen.stdout is not None
        line = self._popen.stdout.readline()
        if not line:
            raise RuntimeError("dbtool exited")
        answer = json.loads(line)
        if not answer["ok"]:
            raise RuntimeError(answer["error"])
        return answer["result"]

    def call(self, op: str, **kwargs: Any) -> Any:
        with self._lock:
            assert self._popen.stdin is not None
            self._popen.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
            self._popen.stdin.flush()
            return self._read()

    async def acall(self, op: str, **kwargs: Any) -> Any:
        return await asyncio.to_thread(self.call, op, **kwargs)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            assert self._popen.stdin is not None
            self._popen.stdin.close()
        try:
            self._popen.wait(5)
        except subprocess.TimeoutExpired:
            self._popen.kill()
            self._popen.wait(5)
        if self._popen.stdout is not None:
            self._popen.stdout.close()
        self._log.close()


class Cluster:
    """Two daphne processes (``web[0]``, ``web[1]``), run workers, Redis, one database.

    ``redis_url=None`` gives the embedded topology instead: runs inline in the daphne process, the
    in-memory event log and channel layer, a private SQLite file (start it with ``workers=0``).
    ``database_url`` picks the database server (default: the suite's ``DATABASE_URL``).
    """

    def __init__(
        self,
        tmp: Path,
        redis_url: str | None,
        *,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.database_url = database_url
        self.prefix = f"nexus-procs-{uuid.uuid4().hex[:12]}"
        self.web: list[Process] = []
        self.ports: list[int] = []
        self.workers: list[Process] = []
        self._drop_database: Callable[[], None] = lambda: None
        self.db: DbTool | None = None
        self.extra_env = extra_env or {}
        self.env: dict[str, str] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, *, webs: int = 2, workers: int = 1) -> Cluster:
        outer = "" if self.redis_url is None else self.database_url
        database_url, self._drop_database = throwaway_database(self.tmp, outer)
        topology = (
            {"NEXUS_RUN_MODE": "inline"}
            if self.redis_url is None
            else {"REDIS_URL": self.redis_url, "NEXUS_REDIS_PREFIX": self.prefix, "NEXUS_RUN_MODE": "worker"}
        )
        self.env = base_env(
            NEXUS_VAR_DIR=str(self.tmp),
            DATABASE_URL=database_url,
            NEXUS_PROVIDER_PLUGINS=SCRIPTED_PLUGIN,
            NEXUS_LOG_LEVEL="warning",
            **topology,
            # these tests push many messages per user (the WebSocket limiter's): the run quotas
            # have tests of their own (tests/runs/test_quotas.py)
            **{"NEXUS_RUNS_PER_MINUTE_PER_USER": "100000", **self.extra_env},
        )
        migrated = manage("migrate", "--noinput", env=self.env)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate failed:\n{migrated.stdout}\n{migrated.stderr}")
        self.db = DbTool(self.env, self.tmp / "dbtool.log")
        for _ in range(webs):
            proc, port = start_daphne(env=self.env, log_dir=self.tmp)
            self.web.append(proc)
            self.ports.append(port)
        for _ in range(workers):
            self.start_worker()
        return self

    def start_worker(self) -> Process:
        index = len(self.workers)
        proc = Process(
            [PYTHON, "manage.py", "runworker", "nexus-runs"],
            env=self.env,
            log_path=self.tmp / f"worker-{index}.log",
        )
        self.workers.append(proc)
        return proc

    def live_workers(self) -> list[Process]:
        return [w for w in self.workers if w.alive()]

    def stop(self) -> None:
        for proc in [*self.workers, *self.web]:  # all at once: each one's shutdown overlaps
            if proc.alive():
                proc.kill(signal.SIGTERM)
        for proc in [*self.workers, *self.web]:
            proc.stop()
        if self.db is not None:
            self.db.stop()
        self._drop_database()
        if self.redis_url is None:
            return
        with contextlib.suppress(Exception):
            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()

    def logs(self) -> str:
        """Every process's log tail, for failure messages."""
        out = []
        for proc in [*self.web, *self.workers]:
            out.append(f"--- {proc.log_path.name} ---\n{proc.output()[-3000:]}")
        return "\n".join(out)

    # -- addresses -----------------------------------------------------------------------------

    def http(self, web: int = 0) -> str:
        return f"http://127.0.0.1:{self.ports[web]}"

    def ws(self, path: str, web: int = 0) -> str:
        return f"ws://127.0.0.1:{self.ports[web]}{path}"

    # -- data ------------------------------------------------------------------------------------

    async def user(self, *, is_staff: bool = False) -> tuple[int, str]:
        """A fresh user: (id, access token). Every test uses its own, so limits never collide."""
        assert self.db is not None
        made = await self.db.acall("user", username=f"u{uuid.uuid4().hex[:10]}", is_staff=is_staff)
        return made["id"], made["token"]

    async def scripted_conversation(
        self,
        user_id: int,
        *,
        reply: str = "Hello from the scripted provider.",
        chunks: int = 5,
        delay: float = 0.0,
        settings: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """(agent id, conversation id) with a scripted agent (tests/realtime/scripted.py)."""
        assert self.db is not None
        agent = await self.db.acall(
            "agent",
            owner_id=user_id,
            provider="scripted",
            model="scripted-1",
            config={"reply": reply, "chunks": chunks, "delay": delay},
        )
        conversation = await self.db.acall(
            "conversation", owner_id=user_id, agent_ids=[agent], settings=settings
        )
        return agent, conversation

    async def openai_conversation(self, user_id: int, base_url: str) -> tuple[str, str]:
        """(agent id, conversation id) with an OpenAI agent that streams from ``base_url``
        (a loopback fake server, tests/fakes) through the real ``openai`` SDK."""
        assert self.db is not None
        agent = await self.db.acall(
            "agent", owner_id=user_id, provider="openai", model="gpt-4o-mini", config={}, base_url=base_url
        )
        conversation = await self.db.acall("conversation", owner_id=user_id, agent_ids=[agent])
        return agent, conversation


class Socket:
    """A plain ``websockets`` client that reads JSON frames and keeps all it read."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, url: str, token: str | None = None, **kwargs: Any) -> Socket:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        ws = await connect(url, additional_headers=headers, open_timeout=10, max_size=2**24, **kwargs)
        return cls(ws)

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def until(self, kind: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if frame["type"] == kind and all(frame.get("data", {}).get(k) == v for k, v in match.items()):
                return frame

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes the connection; the close code this client received."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.recv(max(0.01, deadline - time.monotonic()))
        return self.ws.close_code

    def events(self) -> list[dict[str, Any]]:
        """The conversation events read so far (frames with a seq)."""
        return [f for f in self.frames if "seq" in f]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


def reply_text(frames: list[dict[str, Any]], message_id: str) -> str:
    """The reply's text as a client assembles it: its chunks, concatenated."""
    return "".join(
        f["data"]["chunk"]
        for f in frames
        if f["type"] == "streaming_chunk" and f["data"]["messageId"] == message_id
    )
