"""Load benchmark: N concurrent conversations, each streaming a reply from a loopback fake OpenAI
server paced like a real model, delivered to one WebSocket client per conversation.

Two targets, the same load:
- ``cluster``: the compose topology (scripts/cluster.py): two daphne processes, two run workers,
  PostgreSQL, a private Redis (event log, channel layer, limits);
- ``embedded``: one daphne process with the embedded defaults: SQLite, the in-memory layer and
  event log, runs inline.

Measured per target: delivered events/s (conversation frames with a ``seq``) and tokens/s, the
delivery latency of every token (from the fake server writing it to the client reading it: each
token carries its send time, CLOCK_MONOTONIC being system-wide), events lost (seq gaps, duplicates
and missing tokens: must be 0), and CPU and peak memory of every process (psutil).

    .venv/bin/python bench/load.py                     # both targets, N=100, 50 tokens/s, 500 tokens
    .venv/bin/python bench/load.py --write-docs        # and update docs/benchmarks.md
    .venv/bin/python bench/load.py --only cluster -n 20 --tokens 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402
import websockets  # noqa: E402

from scripts.cluster import (  # noqa: E402
    PYTHON,
    Cluster,
    Process,
    clean_environment,
    free_port,
    run_fixtures,
)
from tests.fakes.openai_server import CREATED, FakeOpenAI, _frame  # noqa: E402
from tests.fakes.script import Reply  # noqa: E402
from tests.fakes.server import Plan, RecordedRequest  # noqa: E402
from tests.fakes.server import main as fake_main  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
SECTION = "## Load (bench/load.py)"
STAMP = re.compile(r"(\d+)@(\d+\.\d+) ")
CONVERSATIONS_PER_USER = 5  # the default socket limit per user
WARMUP_CONVERSATIONS = 8


# --- the paced fake provider --------------------------------------------------------------------


class StampingOpenAI(FakeOpenAI):
    """The fake OpenAI server, except that a reply with ``extra={"tokens": n}`` streams n tokens
    ``"<index>@<monotonic send time> "`` at ``tokens_per_s``, on a fixed schedule (a late token
    does not push the next ones back, as a model's pace does not)."""

    async def _stream(self, conn: Any, request: RecordedRequest, plan: Plan) -> bool:
        reply = plan.reply
        tokens = int((reply.extra if reply else {}).get("tokens", 0))
        if not tokens:
            return await super()._stream(conn, request, plan)
        body = request.json or {}
        base = {
            "id": "chatcmpl-load",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": body.get("model"),
        }
        writer = conn.writer
        loop = asyncio.get_running_loop()
        interval = 1.0 / (reply.tokens_per_s or 50.0)

        async def send(data: bytes) -> None:
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return _frame({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        try:
            await send(chunk({"role": "assistant", "content": ""}))
            due = loop.time()
            for index in range(tokens):
                due += interval
                wait = due - loop.time()
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(conn.closed.wait(), wait)
                if conn.closed.is_set():
                    return False
                await send(chunk({"content": f"{index}@{time.monotonic():.6f} "}))
                request.frames_sent += 1
            await send(chunk({}, "stop"))
            usage = {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5}
            await send(_frame({**base, "choices": [], "usage": usage}))
            await send(b"data: [DONE]\n\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        request.finished_at = time.monotonic()
        return True


class FakeProvider:
    """The stamping fake as a subprocess (``bench/load.py --serve-fake``), paced replies by default."""

    def __init__(self, *, tokens: int, rate: float) -> None:
        self.popen = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), "--serve-fake"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = self.popen.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the fake provider did not start: {line!r}")
        self.port = int(line.split()[1])
        self.rate = rate
        self.default = Reply(text="", tokens_per_s=rate, extra={"tokens": tokens})
        self.script_short(0)

    def script_short(self, count: int) -> None:
        """The next ``count`` replies are 5 tokens long; then the paced default again."""
        short = Reply(text="", tokens_per_s=self.rate, extra={"tokens": 5}).to_dict()
        body = {"replies": [short] * count, "default": self.default.to_dict()}
        httpx.post(f"{self.url}/_fake/replies", json=body).raise_for_status()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)
        if self.popen.poll() is None:
            self.popen.kill()


# --- the two targets ----------------------------------------------------------------------------


class EmbeddedTarget:
    """One daphne process, no DATABASE_URL and no REDIS_URL: SQLite, in-memory, inline runs."""

    name = "embedded"

    def __init__(self, env: dict[str, str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nexus-load-"))
        # The paced fake provider listens on the loopback interface: allowed egress here.
        self.env = {
            **clean_environment(),
            "NEXUS_VAR_DIR": str(self.dir),
            "NEXUS_EGRESS_ALLOW": "127.0.0.1,::1",
            **env,
        }
        self.port = free_port()
        self.process: Process | None = None

    def start(self) -> None:
        migrate = subprocess.run(
            [PYTHON, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
        )
        if migrate.returncode != 0:
            raise RuntimeError(migrate.stderr[-3000:])
        args = [PYTHON, "-m", "nexus.serve", "-b", "127.0.0.1", "-p", str(self.port)]
        self.process = Process(args, env=self.env, log_path=self.dir / "daphne.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"daphne did not start:\n{self.process.output()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def ws_urls(self) -> list[str]:
        return [f"ws://127.0.0.1:{self.port}"]

    def pids(self) -> dict[str, int]:
        return {"daphne": self.process.pid} if self.process else {}

    def fixtures(self, spec: dict[str, Any]) -> dict[str, Any]:
        return run_fixtures(self.env, spec)

    def warmed(self, conversations: list[dict[str, Any]]) -> bool:
        return True  # one process runs every reply

    postgres_database = None


class ClusterTarget:
    name = "cluster"

    def __init__(self, env: dict[str, str], *, web: int = 2, workers: int = 2) -> None:
        self.cluster = Cluster(
            env=env, web=web, workers=workers, log_dir=Path(tempfile.mkdtemp(prefix="nexus-load-cluster-"))
        )

    def start(self) -> None:
        self.cluster.start()

    def stop(self) -> None:
        self.cluster.stop()
        shutil.rmtree(self.cluster.log_dir, ignore_errors=True)

    @property
    def ws_urls(self) -> list[str]:
        return self.cluster.ws_urls

    def pids(self) -> dict[str, int]:
        return self.cluster.pids()

    def fixtures(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self.cluster.fixtures(spec)

    def warmed(self, conversations: list[dict[str, Any]]) -> bool:
        """Whether every worker has run one of these conversations' replies."""
        owners = self.cluster.sql(
            "select distinct owner from conversations_run where conversation_id = any(%s::uuid[])",
            ([c["id"] for c in conversations],),
        )
        pids = {int(owner.split("|", 1)[0].rsplit(":", 1)[1]) for (owner,) in owners if owner}
        workers = {pid for name, pid in self.cluster.pids().items() if name.startswith("worker")}
        return workers <= pids

    @property
    def postgres_database(self) -> str:
        return self.cluster.database


# --- clients -----------------------------------------------------------------------------------------


@dataclass
class ClientResult:
    events: int = 0
    tokens: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    gaps: int = 0  # missing seqs
    duplicates: int = 0
    status: str | None = None
    error: str | None = None
    first_token_s: float | None = None  # from sending the message
    finished_s: float | None = None


async def run_client(
    url: str, conversation: dict[str, Any], go: asyncio.Event, ready: asyncio.Queue
) -> ClientResult:
    result = ClientResult()
    try:
        async with websockets.connect(
            f"{url}/ws/conversations/{conversation['id']}/",
            additional_headers={"Authorization": f"Bearer {conversation['token']}"},
            open_timeout=60,
            ping_interval=None,
            max_size=None,
        ) as ws:
            last_seq = None
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "session_state":
                    last_seq = frame["data"]["last_seq"]
                    break
            await ready.put(None)
            await go.wait()
            await ws.send(json.dumps({"type": "user_message", "data": {"content": "stream please"}}))
            sent_at = time.monotonic()
            async for raw in ws:
                received = time.monotonic()
                frame = json.loads(raw)
                seq = frame.get("seq")
                if seq is None:
                    continue
                result.events += 1
                if seq <= last_seq:
                    result.duplicates += 1
                    continue
                result.gaps += seq - last_seq - 1
                last_seq = seq
                kind = frame["type"]
                if kind == "streaming_chunk":
                    if result.first_token_s is None and frame["data"]["chunk"]:
                        result.first_token_s = received - sent_at
                    for index, sent in STAMP.findall(frame["data"]["chunk"]):
                        result.tokens.append(int(index))
                        result.latencies.append(received - float(sent))
                elif kind == "run_finished":
                    result.status = frame["data"]["status"]
                    result.finished_s = received - sent_at
                    break
    except Exception as exc:  # reported, never hidden
        result.error = f"{exc.__class__.__name__}: {exc}"
    return result


# --- measuring processes ---------------------------------------------------------------------------


class Sampler:
    """CPU seconds and peak RSS of named processes (and, for the cluster, its PostgreSQL backends)
    over the measured window."""

    def __init__(self, pids: dict[str, int], postgres_database: str | None) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.postgres_database = postgres_database
        self.start_cpu = {name: self._cpu(p) for name, p in self.procs.items()}
        self.peak_rss = {name: 0 for name in self.procs}
        self.pg_first: dict[int, float] = {}
        self.pg_last: dict[int, float] = {}
        self.pg_rss = 0
        self.machine_start = psutil.cpu_times()
        self.started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system

    def _sample(self) -> None:
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                self.peak_rss[name] = max(self.peak_rss[name], proc.memory_info().rss)
        if self.postgres_database:
            rss = 0
            for proc in psutil.process_iter(["cmdline"]):
                cmdline = " ".join(proc.info["cmdline"] or ())
                if cmdline.startswith("postgres:") and f" {self.postgres_database} " in cmdline:
                    with contextlib.suppress(psutil.Error):
                        cpu = self._cpu(proc)
                        self.pg_first.setdefault(proc.pid, cpu)
                        self.pg_last[proc.pid] = cpu
                        rss += proc.memory_info().rss
            self.pg_rss = max(self.pg_rss, rss)

    async def _loop(self) -> None:
        while True:
            self._sample()
            await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> dict[str, tuple[float, float]]:
        """name -> (CPU % of one core over the window, peak RSS in MiB)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self._sample()
        wall = time.monotonic() - self.started
        out = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(psutil.Error):
                cpu = self._cpu(proc) - self.start_cpu[name]
                out[name] = (100 * cpu / wall, self.peak_rss[name] / 2**20)
        if self.postgres_database:
            cpu = sum(self.pg_last[pid] - self.pg_first[pid] for pid in self.pg_last)
            out["postgres (backends, sampled)"] = (100 * cpu / wall, self.pg_rss / 2**20)
        end = psutil.cpu_times()
        busy = sum(
            getattr(end, f) - getattr(self.machine_start, f)
            for f in ("user", "system", "nice", "irq", "softirq")
        )
        ours = sum(cpu for cpu, _ in out.values())
        out["anything else on the machine"] = (max(0.0, 100 * busy / wall - ours), float("nan"))
        return out


# --- one run ------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def warm_up(target: Any, fake: FakeProvider, conversations: list[dict[str, Any]]) -> None:
    """Short replies, two at a time, until every process that runs replies has run one: a
    process's first reply imports the provider SDK and opens its HTTP client (about a second),
    which is start-up, not load."""
    urls = target.ws_urls
    for wave in range(0, len(conversations), 2):
        batch = conversations[wave : wave + 2]
        fake.script_short(len(batch))
        go: asyncio.Event = asyncio.Event()
        ready: asyncio.Queue[None] = asyncio.Queue()
        go.set()
        await asyncio.gather(*(run_client(urls[i % len(urls)], c, go, ready) for i, c in enumerate(batch)))
        if target.warmed(conversations[: wave + 2]):
            return


async def load(target: Any, fake: FakeProvider, *, conversations: int, tokens: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    users = [f"load{tag}-{i}" for i in range(-(-conversations // CONVERSATIONS_PER_USER))]
    spec = {
        "users": [{"username": u} for u in users],
        "agents": [
            {"name": "paced", "provider": "openai", "model": "gpt-4o-mini", "base_url": f"{fake.url}/v1"}
        ],
        "conversations": [
            {"owner": users[i // CONVERSATIONS_PER_USER], "agents": ["paced"]} for i in range(conversations)
        ],
    }
    warm_user = f"load{tag}-warm"
    spec["users"].append({"username": warm_user})
    spec["conversations"] += [{"owner": warm_user, "agents": ["paced"]} for _ in range(WARMUP_CONVERSATIONS)]
    made = target.fixtures(spec)
    await warm_up(target, fake, made["conversations"][conversations:])
    made["conversations"] = made["conversations"][:conversations]
    go = asyncio.Event()
    ready: asyncio.Queue[None] = asyncio.Queue()
    urls = target.ws_urls
    clients = [
        asyncio.ensure_future(run_client(urls[i % len(urls)], conversation, go, ready))
        for i, conversation in enumerate(made["conversations"])
    ]
    for _ in clients:  # every socket open and bound before the load starts
        await asyncio.wait_for(ready.get(), 120)
    pids = {**target.pids(), "fake provider": fake.pid, "load client": os.getpid()}
    sampler = Sampler(pids, target.postgres_database)
    sampler.start()
    started = time.monotonic()
    go.set()
    results: list[ClientResult] = await asyncio.gather(*clients)
    wall = time.monotonic() - started
    processes = await sampler.stop()

    latencies = [x for r in results for x in r.latencies]
    missing = sum(tokens - len(set(r.tokens)) for r in results)
    return {
        "target": target.name,
        "web": len(target.ws_urls),
        "workers": sum(name.startswith("worker") for name in target.pids()),
        "conversations": conversations,
        "tokens_each": tokens,
        "wall_s": wall,
        "events": sum(r.events for r in results),
        "tokens": sum(len(r.tokens) for r in results),
        "events_per_s": sum(r.events for r in results) / wall,
        "tokens_per_s": sum(len(r.tokens) for r in results) / wall,
        "p50_ms": 1000 * percentile(latencies, 0.50),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies, default=float("nan")),
        "ttft_p50_s": percentile([r.first_token_s for r in results if r.first_token_s is not None], 0.5),
        "ttft_max_s": max(
            (r.first_token_s for r in results if r.first_token_s is not None), default=float("nan")
        ),
        "reply_p50_s": percentile([r.finished_s for r in results if r.finished_s is not None], 0.5),
        "reply_max_s": max((r.finished_s for r in results if r.finished_s is not None), default=float("nan")),
        "lost": sum(r.gaps for r in results) + sum(r.duplicates for r in results) + missing,
        "completed": sum(r.status == "completed" for r in results),
        "errors": [r.error for r in results if r.error][:3],
        "processes": processes,
    }


def run_target(
    kind: str, *, conversations: int, tokens: int, rate: float, web: int = 2, workers: int = 2
) -> dict[str, Any]:
    fake = FakeProvider(tokens=tokens, rate=rate)
    env = {
        "NEXUS_JWT_ACCESS_MINUTES": "120",
        "NEXUS_LOG_LEVEL": "warning",
        # a load test is one client standing in for many people: no per-user run quotas
        "NEXUS_RUNS_PER_MINUTE_PER_USER": "1000000",
        "NEXUS_MAX_ACTIVE_RUNS_PER_USER": "100000",
    }
    target = ClusterTarget(env, web=web, workers=workers) if kind == "cluster" else EmbeddedTarget(env)
    try:
        print(f"[{kind}] starting", flush=True)
        target.start()
        print(f"[{kind}] {conversations} conversations x {tokens} tokens at {rate:g} tokens/s", flush=True)
        return asyncio.run(load(target, fake, conversations=conversations, tokens=tokens))
    finally:
        target.stop()
        fake.stop()


# --- report -------------------------------------------------------------------------------------------


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({model}), {memory:.0f} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def render(results: list[dict[str, Any]]) -> str:
    labels = {
        "cluster": "cluster: {web} daphne + {workers} workers, PostgreSQL, Redis",
        "embedded": "embedded: 1 daphne, SQLite, in-memory, inline runs",
    }
    rows = [
        ("conversations streaming at once", lambda r: f"{r['conversations']}"),
        ("tokens per reply (50 tokens/s)", lambda r: f"{r['tokens_each']}"),
        ("replies completed", lambda r: f"{r['completed']}/{r['conversations']}"),
        ("wall time", lambda r: f"{r['wall_s']:.1f} s"),
        (
            "first token after send: median / slowest",
            lambda r: f"{r['ttft_p50_s']:.2f} / {r['ttft_max_s']:.2f} s",
        ),
        ("whole reply: median / slowest", lambda r: f"{r['reply_p50_s']:.1f} / {r['reply_max_s']:.1f} s"),
        ("delivered events/s (frames with seq)", lambda r: f"{r['events_per_s']:.0f}"),
        ("delivered tokens/s", lambda r: f"{r['tokens_per_s']:.0f}"),
        ("delivery latency p50 / p99", lambda r: f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} ms"),
        ("delivery latency max", lambda r: f"{r['max_ms']:.0f} ms"),
        ("events lost (gaps, duplicates, missing tokens)", lambda r: f"{r['lost']}"),
    ]
    out = ["| | " + " | ".join(labels[r["target"]].format(**r) for r in results) + " |"]
    out.append("|---|" + "---:|" * len(results))
    for label, cell in rows:
        out.append(f"| {label} | " + " | ".join(cell(r) for r in results) + " |")
    out.append("")
    out.append("CPU (% of one core, averaged over the run) and peak memory (RSS) per process:")
    out.append("")
    out.append("| target | process | CPU | peak RSS |")
    out.append("|---|---|---:|---:|")
    for r in results:
        for name, (cpu, rss) in r["processes"].items():
            memory = "" if rss != rss else f"{rss:.0f} MiB"  # NaN: not measured
            out.append(f"| {r['target']} | {name} | {cpu:.0f} % | {memory} |")
    return "\n".join(out)


def write_docs(table: str, *, command: str) -> None:
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    body = "\n".join(
        [
            SECTION,
            "",
            f"Latest run: {today}, on {machine()}.",
            "Every process (Nexus, PostgreSQL, Redis, the fake provider and the load client) shares those",
            "cores, and so did other work on the machine (its rows below). Command:",
            "",
            "```",
            command,
            "```",
            "",
            "The cluster is the one `make cluster` runs (scripts/cluster.py: the docker-compose",
            "topology natively, with a private Redis and a private PostgreSQL database); the embedded",
            "target is what `make run` serves. Each conversation has its own WebSocket client; all send",
            "one message at the same moment, and each reply streams from a loopback fake OpenAI server",
            "(real SSE wire format, read by the real SDK adapter) at 50 tokens/s. Latency is per token,",
            "from the fake server writing it to the client reading its frame (each token carries its",
            "send time). Chunks are merged when the path is busy, so there are fewer events than tokens.",
            "Lost counts seq gaps, duplicate seqs and tokens missing from a reply.",
            "",
            "Before the measured load, a few short replies warm every process that runs replies up: a",
            "process's first reply imports the provider SDK and opens its HTTP client, about one second",
            "(measured: 0.9-1.5 s to the first token cold, 0.1 s warm).",
            "",
            table,
            "",
            "Reading it: nothing is lost on either target. Once a reply streams, delivery takes tens of",
            "milliseconds; the p99 and the slow first tokens come from CPU. On two cores the four Nexus",
            "processes, PostgreSQL, Redis, the fake and the client need more than two cores while 100 runs",
            "start at the same instant: every run.execute reaches a worker within about a second, but the",
            "claims then trickle out over seconds (a worker's database calls share one thread, which waits",
            "on a saturated CPU behind the runs already streaming). The embedded process does the same",
            "work without Redis or PostgreSQL round trips or process hops. Figures vary with the other",
            "work on the machine (the 'anything else' rows).",
            "",
        ]
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        after = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + ("\n" + text[after + 1 :] if after >= 0 else "")
    DOCS.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    if sys.argv[1:2] == ["--serve-fake"]:
        fake_main(StampingOpenAI, ["--port", "0"])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--conversations", type=int, default=100)
    parser.add_argument("--tokens", type=int, default=500, help="tokens per reply (default 500)")
    parser.add_argument("--rate", type=float, default=50.0, help="tokens/s of each reply (default 50)")
    parser.add_argument("--only", choices=("cluster", "embedded"), default=None)
    parser.add_argument("--web", type=int, default=2, help="cluster: daphne processes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="cluster: run workers (default 2)")
    parser.add_argument("--write-docs", action="store_true", help=f"update {SECTION!r} in docs/benchmarks.md")
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["cluster", "embedded"]
    results = [
        run_target(
            kind,
            conversations=args.conversations,
            tokens=args.tokens,
            rate=args.rate,
            web=args.web,
            workers=args.workers,
        )
        for kind in kinds
    ]
    command = " ".join([".venv/bin/python", "bench/load.py", *sys.argv[1:]])
    table = render(results)
    print()
    print(table)
    for r in results:
        if r["errors"]:
            print(f"{r['target']}: client errors: {r['errors']}", file=sys.stderr)
    if args.write_docs:
        write_docs(table, command=command.replace(" --write-docs", ""))
        print(f"\nwrote {DOCS.relative_to(ROOT)}")
    return 0 if all(r["lost"] == 0 and r["completed"] == r["conversations"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
