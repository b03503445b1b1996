"""The search index of the knowledge bases, one module per database (SPEC section 10).

``lexical`` (accurate) and ``semantic`` take base ids and an optional set of document ids, and
return ``(chunk id, score)`` pairs, best first; ``store_vectors`` is called after new chunks are
written. ``schema`` creates what Django's models do not describe (FTS5, tsvector, pgvector).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence

import numpy as np
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from knowledge.index import postgres, sqlite

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32


def query_terms(query: str) -> list[str]:
    """The distinct words of a query (lower case, at most ``MAX_TERMS``), as both indexes read them."""
    terms = dict.fromkeys(word.lower() for word in _WORD.findall(query))
    return list(terms)[:MAX_TERMS]


def _connection(alias: str) -> BaseDatabaseWrapper:
    return connections[alias]


def lexical(
    *,
    alias: str,
    terms: Sequence[str],
    base_ids: Sequence[uuid.UUID],
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    if not terms or not base_ids:
        return []
    connection = _connection(alias)
    backend = sqlite if connection.vendor == "sqlite" else postgres
    return backend.lexical(connection, terms=terms, base_ids=base_ids, document_ids=document_ids, limit=limit)


def semantic(
    *,
    alias: str,
    base_versions: Sequence[tuple[uuid.UUID, int]],
    dimension: int,
    query: np.ndarray,
    document_ids: Collection[uuid.UUID] | None,
    limit: int,
) -> list[tuple[int, float]]:
    if not base_versions:
        return []
    connection = _connection(alias)
    backend = sqlite if connection.vendor == "sqlite" else postgres
    return backend.semantic(
        connection,
        base_versions=base_versions,
        dimension=dimension,
        query=np.ascontiguousarray(query, dtype=np.float32),
        document_ids=document_ids,
        limit=limit,
    )


def store_vectors(*, alias: str, rows: Sequence[tuple[int, uuid.UUID, uuid.UUID, bytes]]) -> None:
    connection = _connection(alias)
    backend = sqlite if connection.vendor == "sqlite" else postgres
    backend.store_vectors(connection, rows)
