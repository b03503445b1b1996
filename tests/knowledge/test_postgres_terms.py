"""PostgreSQL's lexical search leaves out a query's commonest words (from the column's statistics)
while the others still find passages: a word in most passages costs a ranking of each of them."""

from __future__ import annotations

import pytest
from django.db import connection

from knowledge.index import postgres
from knowledge.search import search_sync
from tests.knowledge.conftest import add_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def analyzed(base):
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL's statistics")
    for n in range(40):
        add_text(base, f"Weekly report number {n}: the report lists the weekly figures.", source=f"r{n}.txt")
    rare = add_text(base, "The weekly report of the zeppelin hangar lists its figures.", source="z.txt")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE knowledge_chunk")
    postgres._stats.clear()
    yield rare
    postgres._stats.clear()


def test_the_commonest_words_are_left_out_and_the_rare_one_finds_its_passage(base, analyzed, monkeypatch):
    lexemes = postgres._query_lexemes(connection, ["weekly", "report", "figures", "zeppelin", "hangar"])
    # every passage holds "weekly", "report" and "figur": more than half, so they go
    assert "zeppelin" in lexemes and "hangar" in lexemes
    assert not {"weekli", "report", "figur"} & set(lexemes)
    hits = search_sync([base], "weekly report zeppelin", mode="accurate", top_k=3)
    assert hits[0].document_id == analyzed.id
    # the rarest word is always kept, however common
    assert len(postgres._query_lexemes(connection, ["weekly", "report"])) == 1


def test_without_statistics_every_word_is_kept(base, analyzed):
    postgres._stats[connection.alias] = (postgres.time.monotonic(), 0.0, {}, 0.0)
    assert len(postgres._query_lexemes(connection, ["weekly", "report", "zeppelin"])) == 3
