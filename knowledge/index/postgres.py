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

import uuid
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
from django.db.backends.base.base import BaseDatabaseWrapper

from knowledge.index import vectors
from knowledge.index.schema import PG_TS_CONFIG, VECTOR_TABLE

# per database alias: whether the pgvector table exists (looked up once per process)
_has_pgvector: dict[str, bool] = {}


def lexical(
    connection: BaseDatabaseWrapper,
    *,
    terms: Sequence[str],
    base_ids: Sequence[uuid.UUID],
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    """Chunks matching any of ``terms``, best rank first."""
    # each term quoted as a lexeme: \w+ words hold no quote, so no tsquery operator comes in
    tsquery = " | ".join(f"'{term}'" for term in terms)
    sql = (
        "SELECT c.id, ts_rank_cd(c.search, q) AS rank "
        f"FROM knowledge_chunk c, to_tsquery('{PG_TS_CONFIG}', %s) q "
        "WHERE c.search @@ q AND c.base_id = ANY(%s)"
    )
    params: list[Any] = [tsquery, list(base_ids)]
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
