"""The embedded index: FTS5 BM25 for accurate search, sqlite-vec for semantic search.

sqlite-vec is loaded into every connection by Nexus's SQLite engine (``core.sqlite_backend``);
where it could not be (or another engine is configured) the vectors are scanned by numpy
(``knowledge.index.vectors``), and that is logged once.
"""

from __future__ import annotations

import logging
import unicodedata
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from django.db.backends.base.base import BaseDatabaseWrapper

from knowledge.index import vectors
from knowledge.index.schema import FTS_TABLE, FTS_VOCABULARY

logger = logging.getLogger(__name__)
_warned = False


def _in(values: Sequence[object]) -> str:
    return ", ".join(["%s"] * len(values))


def _fold(term: str) -> str:
    """A word as the unicode61 tokenizer indexes it (lower case, no diacritics)."""
    decomposed = unicodedata.normalize("NFKD", term.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _useful_terms(connection: BaseDatabaseWrapper, terms: Sequence[str]) -> list[str]:
    """The terms worth matching: BM25 gives a word found in over half the passages no weight
    (FTS5 clamps its IDF to ~0), yet matching it would score every one of them. Such words are
    left out; a query made only of them keeps its rarest word."""
    folded = list(dict.fromkeys(_fold(term) for term in terms if _fold(term)))
    if len(folded) < 2:
        return folded
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT term, doc FROM {FTS_VOCABULARY} WHERE term IN ({_in(folded)})",
            folded,
        )
        frequency = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM knowledge_chunk")
        total = cursor.fetchone()[0]
    present = [term for term in folded if frequency.get(term)]
    if not present:
        return []
    useful = [term for term in present if frequency[term] * 2 <= total]
    return useful or [min(present, key=lambda term: frequency[term])]


def lexical(
    connection: BaseDatabaseWrapper,
    *,
    terms: Sequence[str],
    base_ids: Sequence[uuid.UUID],
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    """Chunks matching any of ``terms``, best BM25 first (the score is BM25, higher is better)."""
    terms = _useful_terms(connection, terms)
    if not terms:
        return []
    # each term a quoted FTS5 string: no operator or column filter can come in from the query
    match = " OR ".join(f'"{term}"' for term in terms)
    bases = [b.hex for b in base_ids]
    sql = (
        f"SELECT {FTS_TABLE}.rowid, -bm25({FTS_TABLE}, 2.0, 1.0) FROM {FTS_TABLE} "
        f"CROSS JOIN knowledge_chunk c ON c.id = {FTS_TABLE}.rowid "
        f"WHERE {FTS_TABLE} MATCH %s AND c.base_id IN ({_in(bases)})"
    )
    params: list[Any] = [match, *bases]
    if document_ids is not None:
        documents = [d.hex for d in document_ids]
        sql += f" AND c.document_id IN ({_in(documents)})"
        params += documents
    sql += f" ORDER BY bm25({FTS_TABLE}, 2.0, 1.0) LIMIT %s"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(row[0]), float(row[1])) for row in cursor.fetchall()]


def has_sqlite_vec(connection: BaseDatabaseWrapper) -> bool:
    connection.ensure_connection()
    return bool(getattr(connection, "sqlite_vec_version", None))


def semantic(
    connection: BaseDatabaseWrapper,
    *,
    base_versions: Sequence[tuple[uuid.UUID, int]],
    dimension: int,
    query: np.ndarray,
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    """The ``limit`` chunks closest to ``query`` by cosine (the score is the cosine similarity)."""
    global _warned
    if not has_sqlite_vec(connection):
        if not _warned:
            _warned = True
            logger.warning("knowledge: sqlite-vec is not loaded; semantic search scans with numpy")
        return vectors.scan(
            alias=connection.alias,
            base_versions=base_versions,
            dimension=dimension,
            query=query,
            document_ids=document_ids,
            limit=limit,
        )
    bases = [b.hex for b, _ in base_versions]
    # the embeddings are unit length, so the L2 distance orders as the cosine does, and is
    # cheaper than vec_distance_cosine, which normalizes both sides on every row
    sql = (
        "SELECT id, vec_distance_l2(embedding, %s) FROM knowledge_chunk "
        f"WHERE base_id IN ({_in(bases)}) AND length(embedding) = %s"
    )
    blob = np.ascontiguousarray(query, dtype="<f4").tobytes()
    params: list[Any] = [blob, *bases, dimension * 4]
    if document_ids is not None:
        documents = [d.hex for d in document_ids]
        sql += f" AND document_id IN ({_in(documents)})"
        params += documents
    sql += " ORDER BY 2 LIMIT %s"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # for unit vectors |a - b|^2 = 2 - 2 cos(a, b)
    return [(int(chunk_id), 1.0 - (distance * distance) / 2.0) for chunk_id, distance in rows]
