"""Search over knowledge bases (SPEC section 10): accurate, semantic and hybrid.

``search`` is async (the query's embedding is awaited); ``search_sync`` is the same for sync
callers. The caller passes bases the user may read (``knowledge.selectors``); the search itself
checks nothing about who asks.

- accurate: lexical, BM25 on SQLite (FTS5), ``ts_rank_cd`` on PostgreSQL; ``score`` is that rank.
- semantic: cosine similarity of the query's embedding to each chunk's; ``score`` is the cosine.
  Bases with different embedding models are searched model by model, each with its own query
  embedding, and merged by similarity.
- hybrid: reciprocal rank fusion of the two lists (k = 60), the accurate ranks weighted by
  ``weight_accurate`` and the semantic ones by ``1 - weight_accurate``; ``score`` is scaled so a
  chunk first in both lists scores 1. ``score_details`` holds both raw scores (0 where the
  lexical side did not find the chunk).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from asgiref.sync import async_to_sync, sync_to_async
from django.db import DEFAULT_DB_ALIAS

from core.errors import ValidationFailed
from knowledge import index
from knowledge.embeddings import embedder_for
from knowledge.models import Chunk, Document, KnowledgeBase

Mode = Literal["accurate", "semantic", "hybrid"]
MODES = ("accurate", "semantic", "hybrid")
MAX_TOP_K = 100
RRF_K = 60
# each side of a hybrid search brings this many candidates (at least) to the fusion
HYBRID_CANDIDATES = 50
_METADATA_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


@dataclass(frozen=True, slots=True)
class Hit:
    """One chunk found, with where it comes from and how it scored."""

    chunk_id: int
    document_id: uuid.UUID
    base_id: uuid.UUID
    base: str
    title: str
    text: str
    position: int
    filename: str
    source: str
    source_type: str
    score: float
    score_details: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    document_title: str = ""  # the document's own title (``title`` is the passage's heading)


def _validate(mode: str, top_k: int, weight_accurate: float, metadata: Mapping[str, Any] | None) -> None:
    if mode not in MODES:
        raise ValidationFailed(f"mode must be one of {', '.join(MODES)}.")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise ValidationFailed(f"top_k must be an integer from 1 to {MAX_TOP_K}.")
    if not isinstance(weight_accurate, int | float) or not 0.0 <= float(weight_accurate) <= 1.0:
        raise ValidationFailed("weight_accurate must be a number from 0 to 1.")
    for key in metadata or {}:
        # a key becomes a JSON path of the ORM: keep it to plain names
        if not isinstance(key, str) or not key or set(key) - _METADATA_KEY_CHARS or "__" in key:
            raise ValidationFailed(f"metadata filter key {key!r} is not a plain name.")


async def _query_vectors(bases: Sequence[KnowledgeBase], query: str) -> dict[str, np.ndarray]:
    vectors = {}
    for model in sorted({base.embedding_model for base in bases}):
        embedded = await embedder_for(model).embed([query])
        vectors[model] = np.asarray(embedded[0], dtype=np.float32)
    return vectors


async def search(
    bases: Iterable[KnowledgeBase],
    query: str,
    *,
    mode: Mode = "accurate",
    top_k: int = 5,
    weight_accurate: float = 0.5,
    document_ids: Iterable[uuid.UUID] | None = None,
    metadata: Mapping[str, Any] | None = None,
    using: str = DEFAULT_DB_ALIAS,
) -> list[Hit]:
    """The ``top_k`` best chunks of ``bases`` for ``query``, best first."""
    bases = list(bases)
    _validate(mode, top_k, weight_accurate, metadata)
    if not bases or not query.strip():
        return []
    vectors = await _query_vectors(bases, query) if mode != "accurate" else {}
    return await sync_to_async(_search)(
        bases,
        query,
        vectors,
        mode=mode,
        top_k=top_k,
        weight_accurate=float(weight_accurate),
        document_ids=None if document_ids is None else set(document_ids),
        metadata=dict(metadata or {}),
        using=using,
    )


def search_sync(bases: Iterable[KnowledgeBase], query: str, **options: Any) -> list[Hit]:
    """``search`` for sync code (not from inside a running event loop)."""
    return async_to_sync(search)(bases, query, **options)


def _documents(
    base_ids: Sequence[uuid.UUID],
    document_ids: set[uuid.UUID] | None,
    metadata: dict[str, Any],
    using: str,
) -> set[uuid.UUID] | None:
    """The documents a search is kept to, or None for all of the bases'."""
    if not metadata:
        return document_ids
    documents = Document.objects.using(using).filter(base_id__in=base_ids)
    for key, value in metadata.items():
        documents = documents.filter(**{f"metadata__{key}": value})
    if document_ids is not None:
        documents = documents.filter(id__in=document_ids)
    return set(documents.values_list("id", flat=True))


def _semantic(
    bases: Sequence[KnowledgeBase],
    vectors: dict[str, np.ndarray],
    documents: set[uuid.UUID] | None,
    limit: int,
    using: str,
) -> list[tuple[int, float]]:
    versions = dict(
        KnowledgeBase.objects.using(using)
        .filter(id__in=[b.id for b in bases])
        .values_list("id", "index_version")
    )
    by_model: dict[str, list[KnowledgeBase]] = defaultdict(list)
    for base in bases:
        by_model[base.embedding_model].append(base)
    found: list[tuple[int, float]] = []
    for model, group in by_model.items():
        query = vectors[model]
        found += index.semantic(
            alias=using,
            base_versions=[(b.id, versions.get(b.id, 0)) for b in group],
            dimension=len(query),
            query=query,
            document_ids=documents,
            limit=limit,
        )
    found.sort(key=lambda pair: -pair[1])
    return found[:limit]


def _fuse(
    accurate: list[tuple[int, float]], semantic: list[tuple[int, float]], weight_accurate: float
) -> list[tuple[int, float]]:
    scores: dict[int, float] = defaultdict(float)
    for rank, (chunk_id, _) in enumerate(accurate, start=1):
        scores[chunk_id] += weight_accurate / (RRF_K + rank)
    for rank, (chunk_id, _) in enumerate(semantic, start=1):
        scores[chunk_id] += (1.0 - weight_accurate) / (RRF_K + rank)
    best = 1.0 / (RRF_K + 1)
    return sorted(((c, s / best) for c, s in scores.items()), key=lambda pair: (-pair[1], pair[0]))


def _search(
    bases: list[KnowledgeBase],
    query: str,
    vectors: dict[str, np.ndarray],
    *,
    mode: str,
    top_k: int,
    weight_accurate: float,
    document_ids: set[uuid.UUID] | None,
    metadata: dict[str, Any],
    using: str,
) -> list[Hit]:
    base_ids = [base.id for base in bases]
    documents = _documents(base_ids, document_ids, metadata, using)
    if documents is not None and not documents:
        return []
    limit = max(top_k, HYBRID_CANDIDATES) if mode == "hybrid" else top_k
    accurate: list[tuple[int, float]] = []
    semantic: list[tuple[int, float]] = []
    if mode in ("accurate", "hybrid"):
        accurate = index.lexical(
            alias=using,
            terms=index.query_terms(query),
            base_ids=base_ids,
            document_ids=documents,
            limit=limit,
        )
    if mode in ("semantic", "hybrid"):
        semantic = _semantic(bases, vectors, documents, limit, using)
    if mode == "accurate":
        ranked = accurate
    elif mode == "semantic":
        ranked = semantic
    else:
        ranked = _fuse(accurate, semantic, weight_accurate)
    ranked = ranked[:top_k]
    if not ranked:
        return []
    accurate_scores = dict(accurate)
    semantic_scores = dict(semantic)
    rows = {
        chunk.id: chunk
        for chunk in Chunk.objects.using(using)
        .filter(id__in=[chunk_id for chunk_id, _ in ranked])
        .select_related("document", "document__stored_file", "base")
    }
    hits = []
    for chunk_id, score in ranked:
        chunk = rows.get(chunk_id)
        if chunk is None:  # deleted between the ranking and now
            continue
        details = {}
        if mode == "hybrid":
            cosine = semantic_scores.get(chunk_id)
            if cosine is None:
                vector = vectors.get(chunk.base.embedding_model)
                blob = bytes(chunk.embedding)
                if vector is not None and len(blob) == len(vector) * 4:
                    cosine = float(np.frombuffer(blob, dtype="<f4") @ vector)
            details = {"accurate": accurate_scores.get(chunk_id, 0.0), "semantic": cosine or 0.0}
        hits.append(_hit(chunk, score, details))
    return hits


def _hit(chunk: Chunk, score: float, details: dict[str, float]) -> Hit:
    document = chunk.document
    metadata = dict(document.metadata or {})
    filename = str(metadata.get("filename") or (document.stored_file.name if document.stored_file else ""))
    return Hit(
        chunk_id=chunk.id,
        document_id=document.id,
        base_id=chunk.base_id,
        base=chunk.base.name,
        title=chunk.title or document.title,
        text=chunk.text,
        position=chunk.position,
        filename=filename,
        source=document.source,
        source_type=document.source_type,
        score=float(score),
        score_details=details,
        metadata=metadata,
        document_title=document.title,
    )
