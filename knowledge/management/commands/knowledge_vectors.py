"""``manage.py knowledge_vectors``: (re)build the semantic index from the chunks' stored vectors.

For a PostgreSQL server that gained pgvector after Nexus migrated (the extension is enabled, its
table made, every chunk's vector copied; without pgvector, it says so and changes nothing), and
for SQLite's vec0 tables after a restore. The chunks always hold their vectors: this only copies.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from knowledge.index import postgres, schema, store_vectors
from knowledge.models import Chunk

BATCH = 1000


class Command(BaseCommand):
    help = "Copy every chunk's vector into the semantic index (pgvector or sqlite-vec)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args: Any, database: str, **options: Any) -> None:
        connection = connections[database]
        if connection.vendor == "postgresql":
            if not schema.install_pgvector(connection):
                raise CommandError(
                    "This PostgreSQL server has no pgvector (or this role may not enable it): "
                    "semantic search keeps scanning the vectors in Python."
                )
            postgres._has_pgvector.pop(connection.alias, None)
        copied = 0
        rows = (
            Chunk.objects.using(database)
            .order_by("id")
            .values_list("id", "base_id", "document_id", "embedding")
        )
        batch: list[tuple[int, Any, Any, bytes]] = []
        for chunk_id, base_id, document_id, embedding in rows.iterator(chunk_size=BATCH):
            batch.append((chunk_id, base_id, document_id, bytes(embedding)))
            if len(batch) >= BATCH:
                store_vectors(alias=database, rows=batch)
                copied += len(batch)
                batch = []
        if batch:
            store_vectors(alias=database, rows=batch)
            copied += len(batch)
        self.stdout.write(f"{copied} chunk vectors copied into the semantic index.")
