"""Search over knowledge bases: accurate, semantic and hybrid, with filters and ownership.

These run on the suite's database (PostgreSQL in CI); ``test_sqlite.py`` runs them again on
SQLite (FTS5 and sqlite-vec) in a subprocess.
"""

from __future__ import annotations

import pytest

from core.errors import ValidationFailed
from knowledge import services
from knowledge.models import Chunk
from knowledge.search import search_sync
from tests.knowledge.conftest import add_text

pytestmark = pytest.mark.django_db

CATS = "Cats are small carnivorous mammals. A cat purrs when content and hunts mice at night."
TIDES = "Ocean tides are caused by the gravitational pull of the moon and the sun on the water."
RUST = "Rust is a systems programming language; its borrow checker enforces memory safety."


@pytest.fixture
def corpus(base):
    return {
        "cats": add_text(base, CATS, title="Cats", source="cats.md", metadata={"author": "ann"}),
        "tides": add_text(base, TIDES, title="Tides", source="tides.txt", metadata={"author": "bob"}),
        "rust": add_text(base, RUST, title="Rust", source="rust.txt", metadata={"author": "ann"}),
    }


def test_accurate_search_finds_the_passage_with_the_words(base, corpus):
    hits = search_sync([base], "moon gravitational pull", mode="accurate", top_k=3)
    assert hits and hits[0].document_id == corpus["tides"].id
    assert hits[0].score > 0 and hits[0].base == "handbook" and hits[0].source == "tides.txt"
    # no document holds these words: nothing is found lexically
    assert search_sync([base], "zebra quantum", mode="accurate") == []


def test_semantic_search_ranks_by_cosine(base, corpus):
    hits = search_sync([base], "borrow checker memory safety", mode="semantic", top_k=3)
    assert hits[0].document_id == corpus["rust"].id
    assert len(hits) == 3  # semantic always ranks every chunk
    assert hits[0].score > hits[1].score and -1.0 <= hits[-1].score <= 1.0


def test_hybrid_search_fuses_both_lists_with_score_details(base, corpus):
    hits = search_sync([base], "cat purrs", mode="hybrid", top_k=3, weight_accurate=0.7)
    assert hits[0].document_id == corpus["cats"].id
    assert hits[0].score == pytest.approx(1.0)  # first in both lists
    assert set(hits[0].score_details) == {"accurate", "semantic"}
    assert hits[0].score_details["accurate"] > 0 and hits[0].score_details["semantic"] > 0
    assert all(set(hit.score_details) == {"accurate", "semantic"} for hit in hits)
    # the chunks the lexical side missed still carry their cosine, and score below the first
    assert all(hit.score < hits[0].score for hit in hits[1:])


def test_weight_accurate_moves_the_ranking_towards_one_side(base, corpus):
    only_lexical = search_sync([base], "moon", mode="hybrid", weight_accurate=1.0, top_k=1)
    assert only_lexical[0].document_id == corpus["tides"].id


def test_filters_keep_to_documents_and_metadata(base, corpus):
    hits = search_sync([base], "memory moon cat", mode="hybrid", top_k=5, metadata={"author": "ann"})
    assert {hit.document_id for hit in hits} == {corpus["cats"].id, corpus["rust"].id}
    hits = search_sync([base], "memory moon cat", mode="semantic", document_ids=[corpus["tides"].id])
    assert {hit.document_id for hit in hits} == {corpus["tides"].id}
    assert search_sync([base], "moon", mode="accurate", metadata={"author": "nobody"}) == []


def test_bad_options_are_refused():
    with pytest.raises(ValidationFailed):
        search_sync([], "x", mode="fuzzy")
    with pytest.raises(ValidationFailed):
        search_sync([], "x", top_k=0)
    with pytest.raises(ValidationFailed):
        search_sync([], "x", weight_accurate=1.5)
    with pytest.raises(ValidationFailed):
        search_sync([], "x", metadata={"a__b": 1})


def test_another_users_base_is_invisible(user, other_user, corpus):
    from knowledge.selectors import bases_by_names, bases_readable

    theirs = services.base_create(owner=other_user, name="handbook")
    add_text(theirs, "The moon is made of cheese, says the other user.", title="Moon")
    mine = list(bases_readable(user))
    assert [b.owner_id for b in mine] == [user.id]
    hits = search_sync(mine, "moon cheese", mode="hybrid", top_k=10)
    assert hits and all(hit.base_id == mine[0].id for hit in hits)
    assert [b.id for b in bases_by_names(user=other_user, names=["handbook"])] == [theirs.id]
    from core.errors import NotFound

    with pytest.raises(NotFound):
        bases_by_names(user=other_user, names=["handbook", "secret"])


def test_bases_with_two_embedding_models_are_searched_together(user, base, corpus):
    # another base with the same model is searched beside the first; results merge
    second = services.base_create(owner=user, name="second")
    add_text(second, "Tides in the harbour follow the moon twice a day.", title="Harbour")
    hits = search_sync([base, second], "moon tides", mode="hybrid", top_k=4)
    assert {hit.base for hit in hits} == {"handbook", "second"}


def test_a_deleted_document_leaves_the_index(base, corpus):
    services.document_delete(document=corpus["tides"])
    assert not Chunk.objects.filter(document_id=corpus["tides"].id).exists()
    for mode in ("accurate", "semantic", "hybrid"):
        hits = search_sync([base], "moon gravitational tides", mode=mode, top_k=5)
        assert corpus["tides"].id not in {hit.document_id for hit in hits}


def test_a_deleted_base_takes_its_chunks(user, base, corpus):
    services.base_delete(base=base)
    assert not Chunk.objects.exists()
    again = services.base_create(owner=user, name="handbook")
    assert search_sync([again], "moon", mode="hybrid") == []


def test_the_vector_index_follows_the_chunks(base, corpus):
    """sqlite-vec's vec0 table (SQLite) or pgvector's table (PostgreSQL with the extension)
    holds one row per chunk, and loses a deleted document's rows."""
    from django.db import connection

    from knowledge.index import postgres

    if connection.vendor == "sqlite":
        table = "knowledge_chunk_vec256"
    elif postgres.has_pgvector(connection):
        table = "knowledge_chunk_vector"
    else:
        pytest.skip("PostgreSQL without pgvector: semantic search scans in Python")

    def rows() -> int:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            return cursor.fetchone()[0]

    assert rows() == Chunk.objects.count() == 3
    services.document_delete(document=corpus["cats"])
    assert rows() == Chunk.objects.count() == 2
