"""The realtime relay against a loopback fake OpenAI server: how much Nexus adds between a provider's
stream and a WebSocket client, next to the same stream read directly with the openai SDK.

Run: ``.venv/bin/python bench/relay.py`` (needs Redis for the worker mode: ``--redis-url``, default
``redis://127.0.0.1:6379/0``; ``--quick`` for a short smoke run; ``--json FILE`` to keep the numbers).

Modes: ``direct`` (the openai SDK reading the fake), ``inline`` (one daphne, in-memory channel
layer and event log, the run an asyncio task in daphne) and ``workers`` (one daphne + one
``runworker nexus-runs``, Redis channel layer and event log). Each mode has its own private SQLite
database (``--postgres-url``: a throwaway PostgreSQL database instead). Each Nexus run gets a fresh
conversation; the agent is provider ``openai`` with ``base_url`` at the fake. The fake runs in its
own process and stamps every token with its send time (bench/common.py).

Sections: (a) 2,000 unpaced chunks: throughput as a ratio of direct; (b) 200 tokens/s: added time
to first token and added per-chunk latency; (c) 100 concurrent streams at 50 tokens/s: events
lost, p99 delivery latency, CPU per process; (d) RSS per idle socket of one daphne holding 1,000
sockets, next to a bare daphne echo consumer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Run as a script, bench/ is first on sys.path and bench/providers.py would shadow the package.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

import openai  # noqa: E402
import orjson  # noqa: E402
import psutil  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench.common import (  # noqa: E402
    StampedFakeProcess,
    median,
    percentile,
    stamped_reply,
    stamps,
    throwaway_postgres,
)
from tests.fakes.script import Reply  # noqa: E402
from tests.procs import DAPHNE, PYTHON, Process, base_env, free_port, manage, start_daphne  # noqa: E402
from tests.realtime_procs.cluster import DbTool  # noqa: E402

MODEL = "fake-model"
PROMPT = [{"role": "user", "content": "Stream, please."}]


# --- clusters ----------------------------------------------------------------------------------


class Nexus:
    """One daphne (+ one worker in ``workers`` mode) on a private SQLite database."""

    def __init__(
        self, mode: str, tmp: Path, *, redis_url: str, fake_base_url: str, postgres_url: str | None = None
    ) -> None:
        self.mode = mode
        self.postgres_url = postgres_url
        self._drop_database: Callable[[], None] = lambda: None
        self.tmp = tmp / mode
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.redis_url = redis_url
        self.prefix = f"nexus-bench-{os.getpid()}-{mode}"
        self.fake_base_url = fake_base_url
        self.procs: list[Process] = []
        self.db: DbTool | None = None
        self.port = 0
        self.user_id = 0
        self.token = ""
        self.agent = ""

    def start(self) -> Nexus:
        extra = {}
        if self.mode == "workers":
            extra = {
                "REDIS_URL": self.redis_url,
                "NEXUS_REDIS_PREFIX": self.prefix,
                "NEXUS_RUN_MODE": "worker",
            }
        database_url = f"sqlite:///{self.tmp / 'db.sqlite3'}"
        if self.postgres_url:
            database_url, self._drop_database = throwaway_postgres(self.postgres_url)
        self.database = "PostgreSQL" if self.postgres_url else "SQLite"
        self.env = base_env(
            NEXUS_VAR_DIR=str(self.tmp),
            DATABASE_URL=database_url,
            OPENAI_API_KEY="test",
            NEXUS_WS_MAX_SOCKETS_PER_USER="100000",
            NEXUS_WS_MESSAGES_PER_MINUTE="1000000",
            NEXUS_RUNS_PER_MINUTE_PER_USER="1000000",
            NEXUS_MAX_ACTIVE_RUNS_PER_USER="100000",
            NEXUS_LOG_LEVEL="warning",
            **extra,
        )
        migrated = manage("migrate", "--noinput", env=self.env)
        if migrated.returncode:
            raise RuntimeError(migrated.stderr)
        self.db = DbTool(self.env, self.tmp / "dbtool.log")
        daphne, self.port = start_daphne(env=self.env, log_dir=self.tmp)
        self.procs.append(daphne)
        if self.mode == "workers":
            self.procs.append(
                Process(
                    [PYTHON, "manage.py", "runworker", "nexus-runs"],
                    env=self.env,
                    log_path=self.tmp / "worker.log",
                )
            )
        user = self.db.call("user", username=f"bench-{self.mode}")
        self.user_id, self.token = user["id"], user["token"]
        self.agent = self.db.call(
            "agent",
            owner_id=self.user_id,
            provider="openai",
            model=MODEL,
            config={"api_key_env": "OPENAI_API_KEY"},
            base_url=self.fake_base_url,
            name="Relay",
        )
        return self

    @property
    def daphne(self) -> Process:
        return self.procs[0]

    def pids(self) -> dict[str, int]:
        names = ["daphne", "worker"]
        return {f"{self.mode} {names[i]}": p.pid for i, p in enumerate(self.procs)}

    def conversations(self, count: int) -> list[str]:
        assert self.db is not None
        return self.db.call("conversations", owner_id=self.user_id, agent_ids=[self.agent], count=count)

    def url(self, conversation: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/conversations/{conversation}/"

    async def socket(self, conversation: str) -> ClientConnection:
        ws = await connect(
            self.url(conversation),
            additional_headers={"Authorization": f"Bearer {self.token}"},
            max_size=2**24,
            open_timeout=30,
        )
        while orjson.loads(await ws.recv())["type"] != "session_state":
            pass
        return ws

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        if self.db is not None:
            self.db.stop()
        self._drop_database()
        if self.mode == "workers":
            import redis

            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter(match=f"{self.prefix}:*", count=1000))
            for start in range(0, len(keys), 500):
                client.delete(*keys[start : start + 500])
            client.close()


# --- one stream, three ways --------------------------------------------------------------------


@dataclass
class Stream:
    """What one client saw of one reply."""

    sent: float  # when the client asked (user_message sent / SDK request made)
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (arrival time, text piece)
    seqs: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(piece for _, piece in self.arrivals)

    @property
    def first(self) -> float:
        return self.arrivals[0][0]

    @property
    def last(self) -> float:
        return self.arrivals[-1][0]

    def latencies(self, *, from_token: int = 0) -> list[float]:
        """Per token: arrival at the client minus the fake's send time (seconds)."""
        return [
            at - sent for at, piece in self.arrivals for index, sent in stamps(piece) if index >= from_token
        ]

    def tokens(self) -> list[int]:
        return [index for _, piece in self.arrivals for index, _ in stamps(piece)]


async def direct_stream(client: openai.AsyncOpenAI) -> Stream:
    stream = Stream(sent=time.monotonic())
    response = await client.chat.completions.create(model=MODEL, messages=PROMPT, stream=True)
    async for chunk in response:
        if chunk.choices and chunk.choices[0].delta.content:
            stream.arrivals.append((time.monotonic(), chunk.choices[0].delta.content))
    return stream


async def nexus_stream(ws: ClientConnection, *, ready: asyncio.Event | None = None) -> Stream:
    """Send one message on a bound socket and read its reply to run_finished."""
    if ready is not None:
        await ready.wait()
    stream = Stream(sent=time.monotonic())
    await ws.send('{"type":"user_message","data":{"content":"Stream, please."}}')
    while True:
        raw = await ws.recv()
        now = time.monotonic()
        frame = orjson.loads(raw)
        if "seq" in frame:
            stream.seqs.append(frame["seq"])
        kind = frame["type"]
        if kind == "streaming_chunk" and frame["data"]["chunk"]:
            stream.arrivals.append((now, frame["data"]["chunk"]))
        elif kind == "run_finished":
            if frame["data"]["status"] != "completed":
                raise RuntimeError(f"run ended {frame['data']}")
            return stream
        elif kind == "error":
            raise RuntimeError(f"error frame {frame['data']}")


async def nexus_once(nexus: Nexus) -> Stream:
    conversation = (await asyncio.to_thread(nexus.conversations, 1))[0]
    ws = await nexus.socket(conversation)
    try:
        return await nexus_stream(ws)
    finally:
        await ws.close()


# --- sections ---------------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            out[name] = times.user + times.system
    return out


def redis_pid() -> int | None:
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] and proc.info["name"].startswith("redis-server"):
            return proc.pid
    return None


async def section_a(
    fake: StampedFakeProcess, client: openai.AsyncOpenAI, clusters: list[Nexus], runs: int
) -> dict:
    """2,000 unpaced chunks: tokens/s from the request to the last token, as a ratio of direct."""
    chunks = 2000
    fake.script(default=Reply.words(chunks))
    expected = Reply.words(chunks).text
    runners: dict[str, Callable[[], Awaitable[Stream]]] = {"direct": lambda: direct_stream(client)}
    for nexus in clusters:
        runners[nexus.mode] = lambda nexus=nexus: nexus_once(nexus)
    samples: dict[str, list[Stream]] = {name: [] for name in runners}
    for run in runners.values():  # warm-up
        await run()
    for _ in range(runs):
        for name, run in runners.items():
            stream = await run()
            assert stream.text == expected, f"{name}: the reply arrived incomplete"
            samples[name].append(stream)
    result: dict[str, Any] = {"chunks": chunks, "runs": runs}
    for name, streams in samples.items():
        rate = median([chunks / (s.last - s.sent) for s in streams])
        span = median([(chunks - 1) / (s.last - s.first) for s in streams if s.last > s.first])
        frames = median([len(s.arrivals) for s in streams])
        result[name] = {"tokens_per_s": rate, "span_tokens_per_s": span, "frames": frames}
    for nexus in clusters:
        result[nexus.mode]["ratio"] = result[nexus.mode]["tokens_per_s"] / result["direct"]["tokens_per_s"]
    return result


async def section_b(
    fake: StampedFakeProcess, client: openai.AsyncOpenAI, clusters: list[Nexus], runs: int
) -> dict:
    """200 tokens/s: time to first token and per-chunk latency, Nexus minus direct."""
    tokens = 200 if runs > 2 else 60
    fake.script(default=stamped_reply(tokens, 200))
    runners: dict[str, Callable[[], Awaitable[Stream]]] = {"direct": lambda: direct_stream(client)}
    for nexus in clusters:
        runners[nexus.mode] = lambda nexus=nexus: nexus_once(nexus)
    samples: dict[str, list[Stream]] = {name: [] for name in runners}
    for run in runners.values():
        await run()
    for _ in range(runs):
        for name, run in runners.items():
            stream = await run()
            assert sorted(stream.tokens()) == list(range(tokens)), f"{name}: tokens lost"
            samples[name].append(stream)
    result: dict[str, Any] = {"tokens": tokens, "rate": 200, "runs": runs}
    for name, streams in samples.items():
        latencies = [lat for s in streams for lat in s.latencies()]
        result[name] = {
            "ttft_ms": median([(s.first - s.sent) * 1000 for s in streams]),
            "first_chunk_ms": median([s.latencies()[0] * 1000 for s in streams]),
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
        }
    for nexus in clusters:
        mine, base = result[nexus.mode], result["direct"]
        mine["added_ttft_ms"] = mine["ttft_ms"] - base["ttft_ms"]
        mine["added_p50_ms"] = mine["p50_ms"] - base["p50_ms"]
        mine["added_p99_ms"] = mine["p99_ms"] - base["p99_ms"]
    return result


async def section_c(
    fake: StampedFakeProcess, client: openai.AsyncOpenAI, clusters: list[Nexus], streams: int, tokens: int
) -> dict:
    """``streams`` concurrent streams at 50 tokens/s: completeness, p99 latency, CPU per process."""
    fake.script(default=stamped_reply(tokens, 50))
    result: dict[str, Any] = {"streams": streams, "tokens": tokens, "rate": 50}
    others = {"fake": fake.pid, "bench client": os.getpid()}
    if (pid := redis_pid()) is not None:
        others["redis"] = pid

    async def measure(name: str, pids: dict[str, int], work: Callable[[], Awaitable[list[Stream]]]) -> None:
        before, started = cpu_seconds(pids), time.monotonic()
        done = await work()
        wall = time.monotonic() - started
        after = cpu_seconds(pids)
        expected = list(range(tokens))
        lost = sum(len(set(expected) - set(s.tokens())) for s in done)
        duplicated = sum(len(s.tokens()) - len(set(s.tokens())) for s in done)
        gaps = sum(1 for s in done if s.seqs and s.seqs != list(range(s.seqs[0], s.seqs[0] + len(s.seqs))))
        latencies = [lat for s in done for lat in s.latencies()]
        steady = [lat for s in done for lat in s.latencies(from_token=50)]  # after the first second
        result[name] = {
            "lost": lost,
            "duplicated": duplicated,
            "seq_gaps": gaps,
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "steady_p99_ms": percentile(steady, 99) * 1000,
            "wall_s": wall,
            "cpu_percent": {k: 100 * (after[k] - before[k]) / wall for k in after if k in before},
        }

    async def direct_all() -> list[Stream]:
        return list(await asyncio.gather(*(direct_stream(client) for _ in range(streams))))

    await measure("direct", others, direct_all)
    for nexus in clusters:
        conversations = await asyncio.to_thread(nexus.conversations, streams)
        sockets = [await nexus.socket(c) for c in conversations]
        ready = asyncio.Event()

        async def nexus_all(
            sockets: list[ClientConnection] = sockets, ready: asyncio.Event = ready
        ) -> list[Stream]:
            tasks = [asyncio.ensure_future(nexus_stream(ws, ready=ready)) for ws in sockets]
            ready.set()
            return list(await asyncio.gather(*tasks))

        try:
            await measure(nexus.mode, {**nexus.pids(), **others}, nexus_all)
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets))
    return result


def rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


async def hold_sockets(
    urls: list[str], headers: dict[str, str], wait_for: str | None
) -> list[ClientConnection]:
    opened: list[ClientConnection] = []

    async def one(url: str) -> None:
        ws = await connect(url, additional_headers=headers, open_timeout=60, max_size=2**24)
        if wait_for is not None:
            while orjson.loads(await ws.recv())["type"] != wait_for:
                pass
        opened.append(ws)

    for start in range(0, len(urls), 50):
        await asyncio.gather(*(one(u) for u in urls[start : start + 50]))
    return opened


async def section_d(tmp: Path, count: int, *, redis_url: str, fake_base_url: str) -> dict:
    """RSS of one daphne holding ``count`` idle sockets, per socket; a bare echo consumer beside it."""
    result: dict[str, Any] = {"sockets": count}
    nexus = Nexus("inline", tmp / "memory", redis_url=redis_url, fake_base_url=fake_base_url).start()
    try:
        conversations = await asyncio.to_thread(nexus.conversations, count + 20)
        headers = {"Authorization": f"Bearer {nexus.token}"}
        warm = await hold_sockets([nexus.url(c) for c in conversations[count:]], headers, "session_state")
        await asyncio.gather(*(ws.close() for ws in warm))
        await asyncio.sleep(1)
        before = rss(nexus.daphne.pid)
        held = await hold_sockets([nexus.url(c) for c in conversations[:count]], headers, "session_state")
        await asyncio.sleep(2)
        after = rss(nexus.daphne.pid)
        result["nexus_kib_per_socket"] = (after - before) / count / 1024
        result["nexus_rss_mib"] = after / 2**20
        await asyncio.gather(*(ws.close() for ws in held))
    finally:
        nexus.stop()
    echo_dir = tmp / "echo"
    echo_dir.mkdir(exist_ok=True)
    port = free_port()
    echo = Process(
        [DAPHNE, "-b", "127.0.0.1", "-p", str(port), "bench.common:echo_application"],
        env=base_env(NEXUS_VAR_DIR=str(echo_dir), DATABASE_URL=f"sqlite:///{echo_dir / 'db.sqlite3'}"),
        log_path=echo_dir / "echo.log",
    )
    try:
        from tests.procs import wait_for_http

        wait_for_http(f"http://127.0.0.1:{port}/", process=echo)
        url = f"ws://127.0.0.1:{port}/"
        warm = await hold_sockets([url] * 20, {}, None)
        await asyncio.gather(*(ws.close() for ws in warm))
        await asyncio.sleep(1)
        before = rss(echo.pid)
        held = await hold_sockets([url] * count, {}, None)
        await asyncio.sleep(2)
        after = rss(echo.pid)
        result["echo_kib_per_socket"] = (after - before) / count / 1024
        await asyncio.gather(*(ws.close() for ws in held))
    finally:
        echo.stop()
    return result


# --- report ----------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(results: dict[str, Any]) -> str:
    a, b, c, d = (results.get(k) for k in "abcd")
    rows: list[tuple[str, str, str, str]] = []
    if a:
        rows.append(
            ("(a) direct SDK, 2,000 unpaced chunks", f"{a['direct']['tokens_per_s']:,.0f} tok/s", "", "")
        )
        for mode, target in (("inline", 1.0), ("workers", 0.8)):
            if mode in a:
                m = a[mode]
                rows.append(
                    (
                        f"(a) {mode}: throughput vs direct",
                        f"{m['ratio']:.2f}x ({m['tokens_per_s']:,.0f} tok/s, {m['frames']:.0f} frames)",
                        f">= {target}x",
                        verdict(m["ratio"] >= target),
                    )
                )
    if b:
        rows.append(
            (
                "(b) direct SDK at 200 tok/s",
                f"TTFT {b['direct']['ttft_ms']:.1f} ms, chunk p50 {b['direct']['p50_ms']:.2f} / "
                f"p99 {b['direct']['p99_ms']:.2f} ms",
                "",
                "",
            )
        )
        for mode, ttft, p99 in (("inline", 5, 5), ("workers", 15, 30)):
            if mode in b:
                m = b[mode]
                rows.append(
                    (
                        f"(b) {mode}: added time to first token",
                        f"{m['added_ttft_ms']:.1f} ms (first chunk relayed in {m['first_chunk_ms']:.1f} ms)",
                        f"<= {ttft} ms",
                        verdict(m["added_ttft_ms"] <= ttft),
                    )
                )
                rows.append(
                    (
                        f"(b) {mode}: added latency per chunk p50 / p99",
                        f"{m['added_p50_ms']:.2f} / {m['added_p99_ms']:.2f} ms",
                        f"p99 <= {p99} ms",
                        verdict(m["added_p99_ms"] <= p99),
                    )
                )
    if c:
        for mode in ("direct", "inline", "workers"):
            if mode not in c:
                continue
            m = c[mode]
            cpu = ", ".join(f"{k} {v:.0f}%" for k, v in m["cpu_percent"].items())
            rows.append(
                (
                    f"(c) {mode}: {c['streams']} streams x {c['tokens']} tok at 50 tok/s",
                    f"lost {m['lost']}, dup {m['duplicated']}, p50 {m['p50_ms']:.1f} / p99 {m['p99_ms']:.1f} ms"
                    f" (after 1 s: p99 {m['steady_p99_ms']:.1f})",
                    "0 lost" if mode != "direct" else "",
                    verdict(m["lost"] == 0 and m["duplicated"] == 0 and m["seq_gaps"] == 0)
                    if mode != "direct"
                    else "",
                )
            )
            rows.append((f"(c) {mode}: CPU (% of one core)", cpu, "", ""))
    if d:
        rows.append(
            (
                f"(d) one daphne holding {d['sockets']:,} idle sockets",
                f"{d['nexus_kib_per_socket']:.1f} KiB/socket (echo consumer: {d['echo_kib_per_socket']:.1f})",
                "<= 40 KiB",
                verdict(d["nexus_kib_per_socket"] <= 40),
            )
        )
    widths = [max(len(r[i]) for r in [("measure", "result", "target", ""), *rows]) for i in range(4)]
    lines = [
        "| "
        + " | ".join(h.ljust(w) for h, w in zip(("measure", "result", "target", ""), widths, strict=True))
        + " |"
    ]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
        "load_before": os.getloadavg()[0],
    }
    quick = args.quick
    sections = set(args.sections)
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp_name, StampedFakeProcess() as fake:
        tmp = Path(tmp_name)
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        clusters: list[Nexus] = []
        try:
            if sections & {"a", "b", "c"}:
                for mode in args.modes:
                    clusters.append(
                        Nexus(
                            mode,
                            tmp,
                            redis_url=args.redis_url,
                            fake_base_url=fake.base_url,
                            postgres_url=args.postgres_url,
                        ).start()
                    )
            if "a" in sections:
                results["a"] = await section_a(fake, client, clusters, runs=2 if quick else 7)
                print(table({"a": results["a"]}), flush=True)
            if "b" in sections:
                results["b"] = await section_b(fake, client, clusters, runs=2 if quick else 10)
                print(table({"b": results["b"]}), flush=True)
            if "c" in sections:
                results["c"] = await section_c(
                    fake, client, clusters, streams=20 if quick else 100, tokens=50 if quick else 150
                )
                print(table({"c": results["c"]}), flush=True)
        finally:
            for nexus in clusters:
                nexus.stop()
        if "d" in sections:
            results["d"] = await section_d(
                tmp, 200 if quick else 1000, redis_url=args.redis_url, fake_base_url=fake.base_url
            )
    results["load_after"] = os.getloadavg()[0]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("NEXUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--postgres-url",
        help="run (a)-(c) on throwaway databases on this PostgreSQL server (default: private SQLite files)",
    )
    parser.add_argument("--modes", nargs="+", default=["inline", "workers"], choices=["inline", "workers"])
    parser.add_argument("--sections", nargs="+", default=list("abcd"), choices=list("abcd"))
    parser.add_argument("--quick", action="store_true", help="fewer runs and streams: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    print()
    print(
        f"{results['date']} on {results['machine']}; load average {results['load_before']:.2f} before, "
        f"{results['load_after']:.2f} after"
    )
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
