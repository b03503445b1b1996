"""The index on PostgreSQL: full-text search for accurate, pgvector or a numpy scan for semantic.

Accurate: the generated ``knowledge_chunk.search`` tsvector (title weighted A) with its GIN index,
ranked by ``ts_rank_cd`` (cover density: how many query words, how close together). The query
is the OR of its words, as BM25 reads a query: a passage need not hold every word to be found.

Semantic: where ``knowledge_chunk_vector`` exists (pgvector was available at migration time,
``knowledge.index.schema``), ``<=>`` (cosine distance) over the base's rows of the query's
dimension, an exact scan done by pgvector in C. Otherwise ``knowledge.index.vectors`` scans a
per-process matrix of the base's vectors.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from django.db.backends.base.base import BaseDatabaseWrapper

from knowledge.index import vectors
from knowledge.index.schema import PG_TS_CONFIG, VECTOR_TABLE
from knowledge.index.terms import rarest_terms

# per database alias: whether the pgvector table exists (looked up once per process)
_has_pgvector: dict[str, bool] = {}


_STATS_SECONDS = 5.0
# per database alias: (when read, rows of knowledge_chunk, lexeme -> share of rows holding it, the
# smallest share listed)
_stats: dict[str, tuple[float, float, dict[str, float], float]] = {}


def _lexeme_shares(connection: BaseDatabaseWrapper) -> tuple[float, dict[str, float], float]:
    """(rows, lexeme -> share of rows, smallest listed share) from PostgreSQL's statistics of the
    tsvector column (``pg_stats.most_common_elems``, kept by ANALYZE and autovacuum); nothing
    before the first ANALYZE. Read at most every 5 seconds per process."""
    now = time.monotonic()
    known = _stats.get(connection.alias)
    if known is not None and now - known[0] < _STATS_SECONDS:
        return known[1], known[2], known[3]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.most_common_elems::text::text[], s.most_common_elem_freqs, c.reltuples "
            "FROM pg_class c LEFT JOIN pg_stats s ON s.tablename = c.relname AND s.attname = 'search' "
            "AND s.schemaname = current_schema() WHERE c.relname = 'knowledge_chunk'"
        )
        row = cursor.fetchone()
    shares: dict[str, float] = {}
    rows = 0.0
    if row is not None:
        elements, frequencies, reltuples = row
        rows = max(float(reltuples or 0), 0.0)
        if elements and frequencies:
            shares = dict(zip(elements, (float(f) for f in frequencies), strict=False))
    smallest = min(shares.values()) if shares else 0.0
    _stats[connection.alias] = (now, rows, shares, smallest)
    return rows, shares, smallest


def _query_lexemes(connection: BaseDatabaseWrapper, terms: Sequence[str]) -> list[str]:
    """The query's lexemes as the column holds them (stemmed, stop words out), those worth
    matching (``knowledge.index.terms``; ts_rank_cd reads each matching passage's whole tsvector)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tsvector_to_array(to_tsvector('{PG_TS_CONFIG}', %s))", [" ".join(terms)])
        row = cursor.fetchone()
    lexemes = [lexeme for lexeme in (row[0] if row else None) or [] if lexeme]
    rows, shares, smallest = _lexeme_shares(connection)
    if not shares or len(lexemes) <= 1:
        return lexemes
    # a lexeme the statistics do not list is rarer than every one they do
    return rarest_terms({lexeme: shares.get(lexeme, smallest / 2) for lexeme in lexemes}, rows)


def _tsquery(lexemes: Sequence[str]) -> str:
    """The text of a ``tsquery`` that ORs the lexemes, each quoted (a quote inside doubled):
    read by ``CAST(... AS tsquery)``, which takes them as they are (they are the column's)."""
    return " | ".join("'" + lexeme.replace("'", "''") + "'" for lexeme in lexemes)


def lexical(
    connection: BaseDatabaseWrapper,
    *,
    terms: Sequence[str],
    base_ids: Sequence[uuid.UUID],
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    """Chunks matching any of ``terms``, best rank first."""
    lexemes = _query_lexemes(connection, terms)
    if not lexemes:
        return []
    sql = (
        "SELECT c.id, ts_rank_cd(c.search, q) AS rank "
        "FROM knowledge_chunk c, CAST(%s AS tsquery) q "
        "WHERE c.search @@ q AND c.base_id = ANY(%s)"
    )
    params: list[Any] = [_tsquery(lexemes), list(base_ids)]
    if document_ids is not None:
        sql += " AND c.document_id = ANY(%s)"
        params.append(list(document_ids))
    sql += " ORDER BY rank DESC, c.id LIMIT %s"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(row[0]), float(row[1])) for row in cursor.fetchall()]


def has_pgvector(connection: BaseDatabaseWrapper) -> bool:
    known = _has_pgvector.get(connection.alias)
    if known is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [VECTOR_TABLE])
            known = bool(cursor.fetchone()[0])
        _has_pgvector[connection.alias] = known
    return known


def _vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector.tolist()) + "]"


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
    if not has_pgvector(connection):
        return vectors.scan(
            alias=connection.alias,
            base_versions=base_versions,
            dimension=dimension,
            query=query,
            document_ids=document_ids,
            limit=limit,
        )
    literal = _vector_literal(query)
    sql = (
        f"SELECT chunk_id, embedding <=> %s::vector AS distance FROM {VECTOR_TABLE} "
        "WHERE base_id = ANY(%s) AND dimension = %s"
    )
    params: list[Any] = [literal, [b for b, _ in base_versions], dimension]
    if document_ids is not None:
        sql += " AND document_id = ANY(%s)"
        params.append(list(document_ids))
    sql += " ORDER BY distance LIMIT %s"
    params.append(limit)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in cursor.fetchall()]


def store_vectors(
    connection: BaseDatabaseWrapper, rows: Sequence[tuple[int, uuid.UUID, uuid.UUID, bytes]]
) -> None:
    """Copy new chunks' embeddings (chunk id, base id, document id, float32 bytes) to pgvector's
    table, when it exists; the chunk rows hold them in any case."""
    if not rows or not has_pgvector(connection):
        return
    values = []
    for chunk_id, base_id, document_id, blob in rows:
        vector = np.frombuffer(blob, dtype="<f4")
        values.append((chunk_id, base_id, document_id, len(vector), _vector_literal(vector)))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {VECTOR_TABLE} (chunk_id, base_id, document_id, dimension, embedding) "
            "VALUES (%s, %s, %s, %s, %s::vector) ON CONFLICT (chunk_id) DO UPDATE SET "
            "base_id = EXCLUDED.base_id, document_id = EXCLUDED.document_id, "
            "dimension = EXCLUDED.dimension, embedding = EXCLUDED.embedding",
            values,
        )
