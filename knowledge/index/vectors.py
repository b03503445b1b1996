"""Exact semantic search in Python: a base's vectors as one matrix, cached per process.

Used on PostgreSQL without pgvector, and on SQLite when the sqlite-vec extension cannot load.
A matrix is keyed by the base, its ``index_version`` and the dimension, so a change to the base's
chunks (which bumps the version in the same transaction) is seen by the next search. One search
is one matrix-vector product: 10,000 chunks of 256 dimensions take well under a millisecond.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

# The cache's budget for the vectors it holds (bytes): the least recently searched base goes first.
CACHE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class _Matrix:
    version: int
    chunk_ids: np.ndarray  # int64 (n,)
    document_codes: np.ndarray  # int32 (n,): index into documents
    documents: dict[uuid.UUID, int]
    vectors: np.ndarray  # float32 (n, dimension)

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes + self.chunk_ids.nbytes + self.document_codes.nbytes)


_lock = threading.Lock()
_cache: OrderedDict[tuple[str, uuid.UUID, int], _Matrix] = OrderedDict()


def _load(alias: str, base_id: uuid.UUID, dimension: int, version: int) -> _Matrix:
    from knowledge.models import Chunk

    width = dimension * 4
    chunk_ids: list[int] = []
    codes: list[int] = []
    documents: dict[uuid.UUID, int] = {}
    blobs: list[bytes] = []
    rows = Chunk.objects.using(alias).filter(base_id=base_id).values_list("id", "document_id", "embedding")
    for chunk_id, document_id, embedding in rows.iterator(chunk_size=2000):
        blob = bytes(embedding)
        if len(blob) != width:  # a row of another model, mid re-index
            continue
        chunk_ids.append(chunk_id)
        codes.append(documents.setdefault(document_id, len(documents)))
        blobs.append(blob)
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dimension)
    return _Matrix(
        version=version,
        chunk_ids=np.asarray(chunk_ids, dtype=np.int64),
        document_codes=np.asarray(codes, dtype=np.int32),
        documents=documents,
        vectors=np.ascontiguousarray(vectors, dtype=np.float32),
    )


def _matrix(alias: str, base_id: uuid.UUID, dimension: int, version: int) -> _Matrix:
    key = (alias, base_id, dimension)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and cached.version == version:
            _cache.move_to_end(key)
            return cached
    matrix = _load(alias, base_id, dimension, version)
    with _lock:
        _cache[key] = matrix
        _cache.move_to_end(key)
        total = sum(m.nbytes for m in _cache.values())
        while total > CACHE_BYTES and len(_cache) > 1:
            _, evicted = _cache.popitem(last=False)
            total -= evicted.nbytes
    return matrix


def forget(base_id: uuid.UUID) -> None:
    """Drop a base's matrices (a deleted base)."""
    with _lock:
        for key in [k for k in _cache if k[1] == base_id]:
            del _cache[key]


def scan(
    *,
    alias: str,
    base_versions: Sequence[tuple[uuid.UUID, int]],
    dimension: int,
    query: np.ndarray,
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    """The ``limit`` chunks of the bases closest to ``query`` (a unit vector), by cosine."""
    found_ids: list[np.ndarray] = []
    found_scores: list[np.ndarray] = []
    for base_id, version in base_versions:
        matrix = _matrix(alias, base_id, dimension, version)
        if not len(matrix.chunk_ids):
            continue
        scores = matrix.vectors @ query
        if document_ids is not None:
            wanted = [matrix.documents[d] for d in document_ids if d in matrix.documents]
            if not wanted:
                continue
            scores = np.where(np.isin(matrix.document_codes, wanted), scores, -np.inf)
        take = min(limit, len(scores))
        best = np.argpartition(-scores, take - 1)[:take]
        keep = best[np.isfinite(scores[best])]
        found_ids.append(matrix.chunk_ids[keep])
        found_scores.append(scores[keep])
    if not found_ids:
        return []
    ids = np.concatenate(found_ids)
    scores = np.concatenate(found_scores)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [(int(ids[i]), float(scores[i])) for i in order]
