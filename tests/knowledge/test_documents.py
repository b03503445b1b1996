"""Documents: adding (deduplicated by content), the ingest pipeline, deleting, re-indexing."""

from __future__ import annotations

import pytest

from core.errors import Conflict, ValidationFailed
from knowledge import services
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search import search_sync
from tests.knowledge.conftest import add_text

pytestmark = pytest.mark.django_db

MARKDOWN = b"""# Installing

Run the installer and accept the licence.

# Upgrading

Stop the service, replace the binaries, start the service again.
"""


def test_base_names_are_unique_per_owner(user, other_user, base):
    with pytest.raises(Conflict):
        services.base_create(owner=user, name="handbook")
    services.base_create(owner=other_user, name="handbook")  # another owner may
    with pytest.raises(ValidationFailed):
        services.base_create(owner=user, name="a/b")
    with pytest.raises(ValidationFailed):
        services.base_create(owner=user, name="x", embedding_model="no-such-model")
    with pytest.raises(ValidationFailed):
        services.base_create(owner=user, name="x", embedding_dimension=3)
    renamed = services.base_rename(base=base, name="manual")
    assert KnowledgeBase.objects.get(pk=base.pk).name == renamed.name == "manual"


def test_a_markdown_file_is_ingested_end_to_end(base):
    document, created = services.document_add_bytes(base=base, data=MARKDOWN, filename="guide.md")
    assert created and document.status == Document.Status.PENDING and document.stored_file is not None
    stages = []
    services.document_ingest(
        document, progress=lambda stage, done, total: stages.append((stage, done, total))
    )
    document.refresh_from_db()
    assert document.status == Document.Status.READY and document.error == ""
    assert document.chunk_count == Chunk.objects.filter(document=document).count() >= 1
    assert document.metadata["filename"] == "guide.md" and document.metadata["format"] == "markdown"
    assert "Upgrading" in document.text
    assert [s[0] for s in stages if s[1] == s[2]][-1] == "index"
    assert {s[0] for s in stages} == {"extract", "chunk", "embed", "index"}
    hits = search_sync([base], "replace the binaries", mode="hybrid", top_k=1)
    assert hits[0].document_id == document.id and hits[0].filename == "guide.md"


def test_the_same_content_is_one_document(base):
    first, created = services.document_add_bytes(base=base, data=MARKDOWN, filename="guide.md")
    again, created_again = services.document_add_bytes(base=base, data=MARKDOWN, filename="copy.md")
    assert created and not created_again and again.id == first.id
    text, _ = services.document_add_text(base=base, text="plain words")
    same, made = services.document_add_text(base=base, text="plain words", title="other")
    assert not made and same.id == text.id
    assert Document.objects.filter(base=base).count() == 2


def test_a_file_that_cannot_be_read_fails_with_a_safe_message(base):
    with pytest.raises(ValidationFailed):
        services.document_add_bytes(base=base, data=b"", filename="empty.txt")
    with pytest.raises(ValidationFailed):
        services.document_add_bytes(base=base, data=b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, filename="a.png")
    with pytest.raises(ValidationFailed):
        services.document_add_text(base=base, text="   \n  ", title="blank")
    document, _ = services.document_add_text(base=base, text="-- -- --", title="dashes")
    Document.objects.filter(pk=document.pk).update(text="")  # no text and no file: nothing to read
    document.refresh_from_db()
    with pytest.raises(services.IngestError) as failure:
        services.document_ingest(document)
    document.refresh_from_db()
    assert document.status == Document.Status.FAILED and document.error == failure.value.message
    assert "Traceback" not in document.error


def test_deleting_by_source_removes_documents_and_chunks(base):
    add_text(base, "alpha beta gamma", source="notes/a.txt")
    kept = add_text(base, "delta epsilon", source="notes/b.txt")
    assert services.documents_delete_by_source(base=base, source="notes/a.txt") == 1
    assert list(Document.objects.filter(base=base)) == [kept]
    assert set(Chunk.objects.values_list("document_id", flat=True)) == {kept.id}
    assert search_sync([base], "alpha", mode="accurate") == []


def test_reingesting_replaces_the_chunks(base):
    document = add_text(base, "one two three four five six", title="counting")
    before = set(Chunk.objects.filter(document=document).values_list("id", flat=True))
    services.base_update_chunking(base=base, chunk_strategy="tokens", chunk_size=16, chunk_overlap=0)
    assert services.documents_reindex(base=base) == 1
    after = set(Chunk.objects.filter(document=document).values_list("id", flat=True))
    assert after and not after & before
    assert search_sync([base], "three", mode="accurate")[0].document_id == document.id


def test_changing_the_embedding_model_reindexes(base, monkeypatch):
    from knowledge import embeddings

    document = add_text(base, "lighthouse keepers watch the coast")
    # a second model, registered through the same door the registry offers
    other = embeddings.HashingEmbedder(64)
    real = embeddings.embedder_for
    monkeypatch.setattr(
        "knowledge.services.embedder_for", lambda name: other if name == other.name else real(name)
    )
    monkeypatch.setattr(
        "knowledge.search.embedder_for", lambda name: other if name == other.name else real(name)
    )
    services.base_change_embedding_model(base=base, embedding_model=other.name)
    base.refresh_from_db()
    assert (base.embedding_model, base.embedding_dimension) == (other.name, 64)
    chunk = Chunk.objects.get(document=document)
    assert len(bytes(chunk.embedding)) == 64 * 4
    hits = search_sync([base], "lighthouse coast", mode="semantic", top_k=1)
    assert hits[0].document_id == document.id and hits[0].score > 0.3
