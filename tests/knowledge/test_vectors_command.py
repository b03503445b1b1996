"""``manage.py knowledge_vectors`` copies the chunks' stored vectors into the semantic index."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from knowledge.index import postgres, sqlite
from knowledge.search import search_sync
from tests.knowledge.conftest import add_text

pytestmark = pytest.mark.django_db


def test_the_vectors_are_copied_back_into_the_index(base):
    document = add_text(base, "Lighthouses warn ships away from rocks at night.", source="l.txt")
    if connection.vendor == "postgresql" and not postgres.has_pgvector(connection):
        with pytest.raises(CommandError, match="no pgvector"):
            call_command("knowledge_vectors")
        return
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:  # the index lost its rows (a restore without them)
            cursor.execute(f"DELETE FROM {sqlite._vector_table(base.embedding_dimension)}")
        assert search_sync([base], "beacon for sailors", mode="semantic") == []
    call_command("knowledge_vectors")
    hits = search_sync([base], "beacon for sailors", mode="semantic")
    assert hits and hits[0].document_id == document.id
