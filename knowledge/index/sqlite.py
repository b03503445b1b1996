"""The embedded index: FTS5 BM25 for accurate search, sqlite-vec for semantic search.

sqlite-vec is loaded into every connection by Nexus's SQLite engine (``core.sqlite_backend``);
where it could not be (or another engine is configured) the vectors are scanned by numpy
(``knowledge.index.vectors``), and that is logged once.
"""

from __future__ import annotations

import logging
import time
import unicodedata
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from django.db.backends.base.base import BaseDatabaseWrapper

from knowledge.index import vectors
from knowledge.index.schema import FTS_TABLE, FTS_VOCABULARY, VECTOR_TABLE_PREFIX, vector_table_statements
from knowledge.index.terms import rarest_terms

logger = logging.getLogger(__name__)
_warned = False


def _in(values: Sequence[object]) -> str:
    return ", ".join(["%s"] * len(values))


def _fold(term: str) -> str:
    """A word as the unicode61 tokenizer indexes it (lower case, no diacritics)."""
    decomposed = unicodedata.normalize("NFKD", term.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


# Document frequencies choose words, not scores (BM25 reads its own): kept per database alias
# while the number of passages stays the same, at most a minute (when read, passages, word ->
# passages holding it).
_VOCABULARY_SECONDS = 60.0
_vocabulary: dict[str, tuple[float, int, dict[str, int]]] = {}


def _useful_terms(connection: BaseDatabaseWrapper, terms: Sequence[str]) -> list[str]:
    """The terms worth matching (``knowledge.index.terms``), from the exact document frequencies
    of FTS5's vocabulary; a word no passage holds is left out."""
    folded = list(dict.fromkeys(_fold(term) for term in terms if _fold(term)))
    if not folded:
        return []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM knowledge_chunk")
        total = cursor.fetchone()[0]
        now = time.monotonic()
        read_at, counted, known = _vocabulary.get(connection.alias, (0.0, -1, {}))
        if counted != total or now - read_at > _VOCABULARY_SECONDS or len(known) > 100_000:
            read_at, known = now, {}
        frequency: dict[str, int] = {}
        for term in folded:  # one lookup each: fts5vocab seeks on "term =", but scans for "IN"
            if term not in known:
                cursor.execute(f"SELECT doc FROM {FTS_VOCABULARY} WHERE term = %s", [term])
                row = cursor.fetchone()
                if not row:  # absent: asked again next time (never remembered as absent)
                    frequency[term] = 0
                    continue
                known[term] = int(row[0])
            frequency[term] = known[term]
    _vocabulary[connection.alias] = (read_at, total, known)
    present = {term: count / max(total, 1) for term, count in frequency.items() if count}
    return rarest_terms(present, total)


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


def _vector_table(dimension: int) -> str:
    return f"{VECTOR_TABLE_PREFIX}{int(dimension)}"


def _vector_table_exists(connection: BaseDatabaseWrapper, dimension: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM sqlite_master WHERE name = %s", [_vector_table(dimension)])
        return cursor.fetchone() is not None


def store_vectors(
    connection: BaseDatabaseWrapper, rows: Sequence[tuple[int, uuid.UUID, uuid.UUID, bytes]]
) -> None:
    """Copy new chunks' embeddings to the vec0 table of their dimension (made on first use, with
    the trigger that removes a chunk's row when the chunk goes)."""
    if not rows or not has_sqlite_vec(connection):
        return
    by_dimension: dict[int, list[tuple[int, str, bytes]]] = {}
    for chunk_id, base_id, _document_id, blob in rows:
        by_dimension.setdefault(len(blob) // 4, []).append((chunk_id, base_id.hex, blob))
    with connection.cursor() as cursor:
        for dimension, values in by_dimension.items():
            for statement in vector_table_statements(dimension):
                cursor.execute(statement)
            table = _vector_table(dimension)
            cursor.executemany(f"DELETE FROM {table} WHERE rowid = %s", [(v[0],) for v in values])
            cursor.executemany(f"INSERT INTO {table} (rowid, base_id, embedding) VALUES (%s, %s, %s)", values)


def semantic(
    connection: BaseDatabaseWrapper,
    *,
    base_versions: Sequence[tuple[uuid.UUID, int]],
    dimension: int,
    query: np.ndarray,
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    """The ``limit`` chunks closest to ``query`` by cosine (the score is the cosine similarity).

    A search of whole bases asks the vec0 table of the query's dimension, base by base (the
    base is its partition key); a search kept to some documents scans their chunks with
    sqlite-vec's distance function instead (the index on base and document finds them).
    """
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
    blob = np.ascontiguousarray(query, dtype="<f4").tobytes()
    if document_ids is None and _vector_table_exists(connection, dimension):
        found: list[tuple[int, float]] = []
        sql = (
            f"SELECT rowid, distance FROM {_vector_table(dimension)} "
            "WHERE embedding MATCH %s AND k = %s AND base_id = %s"
        )
        with connection.cursor() as cursor:
            for base_id, _ in base_versions:
                cursor.execute(sql, [blob, limit, base_id.hex])
                # L2 between unit vectors: |a - b|^2 = 2 - 2 cos(a, b)
                found += [
                    (int(chunk_id), 1.0 - float(distance) ** 2 / 2.0)
                    for chunk_id, distance in cursor.fetchall()
                ]
        found.sort(key=lambda pair: -pair[1])
        return found[:limit]
    bases = [b.hex for b, _ in base_versions]
    # the embeddings are unit length, so the L2 distance orders as the cosine does, and is
    # cheaper than vec_distance_cosine, which normalizes both sides on every row
    sql = (
        "SELECT id, vec_distance_l2(embedding, %s) FROM knowledge_chunk "
        f"WHERE base_id IN ({_in(bases)}) AND length(embedding) = %s"
    )
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
