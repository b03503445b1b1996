"""Knowledge bases: ingest throughput, search latency and retrieval quality, on SQLite and PostgreSQL.

For each database (a fresh SQLite file, a throwaway PostgreSQL database), in a process of its own:

1. **Ingest** the evaluation documents of ``bench/knowledge_data/docs`` through the real pipeline
   (``knowledge.services.document_add_bytes`` + ``document_ingest``, the base's default chunking
   and the default embedding model), timing each stage from the pipeline's own progress reports:
   extract, chunk, embed, index. Figures: MB of source per second by stage, chunks embedded per
   second.
2. **Quality** of each search mode on ``questions.json`` (every question names its document and a
   short quote of the answering passage; a hit is relevant when it comes from that document and
   contains the quote): recall@5 and MRR@10 for accurate, semantic and hybrid.
3. **Latency**: the base is filled with generated documents (sentences of the evaluation set,
   shuffled with a fixed seed, through the same pipeline) up to each size (10,000 and 100,000
   chunks by default), then every question is asked in each mode (after one warm-up pass):
   p50/p95 in milliseconds of the whole ``search`` call, the query's embedding included. Quality
   is measured again at each size (the same questions among the distractors).

Run: ``.venv/bin/python -m bench.knowledge`` (``--databases sqlite,postgres``, ``--sizes
10000,100000``, ``--quick`` for 10,000 only). PostgreSQL is the machine's server
(``NEXUS_BENCH_POSTGRES_URL``, default ``postgres://postgres@127.0.0.1:5432/postgres``).
Targets (issue #17): hybrid p95 <= 50 ms at 10,000 chunks on both databases; hybrid recall@5 above
accurate and semantic; the default model embeds at least 100 chunks/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "knowledge_data"
MODES = ("accurate", "semantic", "hybrid")
POSTGRES_URL = os.environ.get("NEXUS_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


# --- one database, in its own process ---------------------------------------------------------------


class StageClock:
    """Seconds per pipeline stage, from the progress reports of ``document_ingest``: extract
    ends at ``extract 1/1``, chunk at ``chunk``, embed at ``index 0/n``, index at ``index n/n``."""

    ORDER = ("extract", "chunk", "embed", "index")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.ORDER, 0.0)
        self.chunks = 0
        self._marks: dict[str, float] = {}

    def start(self) -> None:
        self._marks = {"start": time.perf_counter()}

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        if stage == "extract" and done == total:
            self._marks["extract"] = now
        elif stage == "chunk":
            self._marks["chunk"] = now
            self.chunks += total
        elif stage == "index" and done == 0:
            self._marks["embed"] = now
        elif stage == "index":
            self._marks["index"] = now

    def stop(self) -> None:
        previous = self._marks["start"]
        for stage in self.ORDER:
            mark = self._marks.get(stage, previous)
            self.seconds[stage] += mark - previous
            previous = mark


def _ingest(base: Any, name: str, data: bytes, clock: StageClock) -> int:
    from knowledge.services import document_add_bytes, document_ingest

    document, _created = document_add_bytes(base=base, data=data, filename=name)
    clock.start()
    document_ingest(document, progress=clock, data=data)
    clock.stop()
    return document.chunk_count


def _relevant(hit: Any, question: dict) -> bool:
    return hit.filename == question["document"] and _norm(question["evidence"]) in _norm(hit.text)


def _quality(base: Any, questions: list[dict]) -> dict[str, dict[str, float]]:
    from knowledge.search import search_sync

    figures = {}
    for mode in MODES:
        recall = reciprocal = 0.0
        for question in questions:
            hits = search_sync([base], question["question"], mode=mode, top_k=10)
            ranks = [i for i, hit in enumerate(hits, start=1) if _relevant(hit, question)]
            if ranks and ranks[0] <= 5:
                recall += 1
            if ranks:
                reciprocal += 1 / ranks[0]
        figures[mode] = {"recall@5": recall / len(questions), "mrr@10": reciprocal / len(questions)}
    return figures


def _latency(base: Any, questions: list[dict]) -> dict[str, dict[str, float]]:
    from knowledge.search import search_sync

    figures = {}
    for mode in MODES:
        for question in questions[:10]:  # warm-up: caches, the model, the database's pages
            search_sync([base], question["question"], mode=mode, top_k=5)
        times = []
        for _round in range(2):
            for question in questions:
                began = time.perf_counter()
                search_sync([base], question["question"], mode=mode, top_k=5)
                times.append((time.perf_counter() - began) * 1000)
        figures[mode] = {"p50": _percentile(times, 50), "p95": _percentile(times, 95), "n": len(times)}
    return figures


def _sentences() -> list[str]:
    from knowledge.extract import extract

    sentences: list[str] = []
    for path in sorted((DATA / "docs").iterdir()):
        text = extract(path.read_bytes(), filename=path.name).text
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            sentences += [s.strip() for s in re.split(r"(?<=[.!?])\s+", line) if len(s.split()) >= 4]
    return sentences


def _scrambled(sentence: str, rng: random.Random) -> str:
    """The sentence's words in another order: the corpus's vocabulary, none of its quotes (a
    generated chunk must not hold a question's evidence word for word)."""
    words = sentence.split()
    rng.shuffle(words)
    return " ".join(words)


def _fill(base: Any, target: int, have: int, rng: random.Random, clock: StageClock) -> tuple[int, int]:
    """Generated documents until the base holds ``target`` chunks: (chunks, source bytes)."""
    sentences = _sentences()
    number = size = 0
    while have < target:
        number += 1
        paragraphs = []
        for _ in range(40):
            paragraphs.append(
                " ".join(_scrambled(rng.choice(sentences), rng) for _ in range(rng.randint(3, 7)))
            )
        data = (f"# Filler {have}-{number}\n\n" + "\n\n".join(paragraphs)).encode()
        size += len(data)
        have += _ingest(base, f"filler-{have}-{number}.md", data, clock)
    return have, size


def _analyze() -> None:
    """What autovacuum does within a minute of a bulk load: fresh statistics for the planner and
    for the lexical search's choice of words (``knowledge.index.postgres``)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_chunk" if connection.vendor == "postgresql" else "ANALYZE")


def run_one(database_url: str, sizes: list[int]) -> dict[str, Any]:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexus.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model

    from knowledge.services import base_create

    user = get_user_model().objects.create_user(username=f"bench-{time.time_ns()}", password="x")
    base = base_create(owner=user, name="bench")
    questions = json.loads((DATA / "questions.json").read_text())["questions"]

    clock = StageClock()
    source_bytes = 0
    chunks = 0
    for path in sorted((DATA / "docs").iterdir()):
        data = path.read_bytes()
        source_bytes += len(data)
        chunks += _ingest(base, path.name, data, clock)
    mb = source_bytes / 1e6
    ingest = {
        "documents": len(list((DATA / "docs").iterdir())),
        "mb": mb,
        "chunks": chunks,
        "seconds": dict(clock.seconds),
        "mb_per_s": {stage: (mb / s if s else float("inf")) for stage, s in clock.seconds.items()},
        "chunks_per_s_embed": chunks / clock.seconds["embed"] if clock.seconds["embed"] else float("inf"),
    }
    result: dict[str, Any] = {
        "database": "sqlite" if database_url.startswith("sqlite") else "postgres",
        "ingest": ingest,
        "quality": _quality(base, questions),
        "sizes": {},
    }
    rng = random.Random(17)
    fill_clock = StageClock()
    have = chunks
    filled_bytes = 0
    for size in sizes:
        began = time.perf_counter()
        have, added = _fill(base, size, have, rng, fill_clock)
        filled_bytes += added
        _analyze()
        result["sizes"][str(size)] = {
            "chunks": have,
            "fill_seconds": time.perf_counter() - began,
            "latency_ms": _latency(base, questions),
            "quality": _quality(base, questions),
        }
    if fill_clock.chunks:
        fill_mb = filled_bytes / 1e6
        result["fill"] = {
            "mb": fill_mb,
            "chunks": fill_clock.chunks,
            "seconds": dict(fill_clock.seconds),
            "mb_per_s": {
                stage: (fill_mb / s if s else float("inf")) for stage, s in fill_clock.seconds.items()
            },
            "chunks_per_s_embed": fill_clock.chunks / fill_clock.seconds["embed"],
        }
    return result


# --- the parent: one child per database, one table -----------------------------------------------


def _child(database: str, sizes: list[int]) -> dict[str, Any]:
    drop = None
    if database == "sqlite":
        folder = tempfile.mkdtemp(prefix="nexus-bench-knowledge-")
        url = f"sqlite:///{folder}/bench.sqlite3"
    else:
        sys.path.insert(0, str(ROOT))
        from bench.common import throwaway_postgres

        url, drop = throwaway_postgres(POSTGRES_URL)
    try:
        env = {**os.environ, "NEXUS_LOG_LEVEL": "WARNING"}
        out = subprocess.run(
            [sys.executable, "-m", "bench.knowledge", "--one", url, "--sizes", ",".join(map(str, sizes))],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"{database} failed:\n{out.stderr[-4000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if drop is not None:
            drop()


def _print(results: list[dict[str, Any]]) -> None:
    print("\n## Ingest (the evaluation documents, default chunking and embedding model)\n")
    print(
        "| database | source | MB | chunks | extract MB/s | chunk MB/s | embed MB/s | index MB/s | embed chunks/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        for label, i in (("evaluation", r["ingest"]), ("generated", r.get("fill"))):
            if not i:
                continue
            m = i["mb_per_s"]
            print(
                f"| {r['database']} | {label} | {i['mb']:.3f} | {i['chunks']} | {m['extract']:.1f} "
                f"| {m['chunk']:.2f} | {m['embed']:.2f} | {m['index']:.2f} | {i['chunks_per_s_embed']:.0f} |"
            )
    print("\n## Quality (recall@5 / MRR@10; the evaluation base alone, then among the generated chunks)\n")
    print("| database | chunks | accurate | semantic | hybrid |")
    print("|---|---|---|---|---|")
    for r in results:
        rows = [(r["ingest"]["chunks"], r["quality"])] + [
            (s["chunks"], s["quality"]) for s in r["sizes"].values()
        ]
        for chunks, q in rows:
            cells = " | ".join(f"{q[m]['recall@5']:.3f} / {q[m]['mrr@10']:.3f}" for m in MODES)
            print(f"| {r['database']} | {chunks} | {cells} |")
    print("\n## Search latency (ms, p50 / p95, the whole call with the query's embedding, top_k 5)\n")
    print("| database | chunks | accurate | semantic | hybrid |")
    print("|---|---|---|---|---|")
    for r in results:
        for s in r["sizes"].values():
            lat = s["latency_ms"]
            cells = " | ".join(f"{lat[m]['p50']:.1f} / {lat[m]['p95']:.1f}" for m in MODES)
            print(f"| {r['database']} | {s['chunks']} | {cells} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--quick", action="store_true", help="10,000 chunks only")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    args = parser.parse_args(argv)
    sizes = [10000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    if args.one:
        print(json.dumps(run_one(args.one, sizes)))
        return
    results = []
    for database in args.databases.split(","):
        began = time.perf_counter()
        results.append(_child(database, sizes))
        print(f"{database}: {time.perf_counter() - began:.0f} s", file=sys.stderr)
    print(f"# bench/knowledge.py, {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs")
    _print(results)
    if args.json:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
