"""Writes of knowledge bases and documents, and the ingest pipeline (SPEC section 10).

The pipeline, ``document_ingest``: extract (bytes to text, ``knowledge.extract``) -> chunk
(``knowledge.chunking``) -> embed in batches (``knowledge.embeddings``) -> index (the chunks
replace the document's old ones in one transaction, and the base's ``index_version`` moves on).
It reports ``progress(stage, done, total)`` and leaves the document ``ready`` or ``failed`` with a
message safe to show its owner. The task runner calls it; the admin's re-index action too.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from asgiref.sync import async_to_sync, sync_to_async
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import F

from core import filetypes
from core.errors import Conflict, NexusError, ValidationFailed
from files.models import StoredFile
from knowledge import index
from knowledge.chunking import STRATEGIES, chunk_text
from knowledge.embeddings import DEFAULT_EMBEDDING_MODEL, embedder_for
from knowledge.extract import ExtractionError, extract
from knowledge.index import vectors
from knowledge.models import Chunk, Document, KnowledgeBase

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
EMBED_BATCH = 64
MAX_NAME = 200
# the folder of the stored files that documents added as bytes keep their bytes in
FILES_FOLDER = "knowledge"


class IngestError(NexusError):
    """The pipeline failed; ``message`` is safe to show, ``retryable`` says a retry may succeed."""

    code = "validation_error"
    http_status = 422

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
        if retryable:  # the codes are SPEC section 4's: a failing model or store is upstream's fault
            self.code, self.http_status = "provider_error", 502


# --- Bases ----------------------------------------------------------------------------------------


def _name_validate(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("A knowledge base needs a name.")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ValidationFailed(f"A knowledge base name is at most {MAX_NAME} characters.")
    if "/" in name or any(ord(ch) < 32 for ch in name):
        raise ValidationFailed("A knowledge base name holds no slash and no control character.")
    return name


def _chunking_validate(strategy: Any, size: Any, overlap: Any) -> None:
    if strategy not in STRATEGIES:
        raise ValidationFailed(f"chunk_strategy must be one of {', '.join(STRATEGIES)}.")
    if not isinstance(size, int) or isinstance(size, bool) or not 16 <= size <= 8192:
        raise ValidationFailed("chunk_size must be an integer from 16 to 8192.")
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap <= size // 2:
        raise ValidationFailed("chunk_overlap must be an integer from 0 to half of chunk_size.")


def _embedder_dimension(model: Any) -> int:
    if not isinstance(model, str):
        raise ValidationFailed("embedding_model must be a model name.")
    try:
        return embedder_for(model).dimension
    except LookupError:
        raise ValidationFailed(f"Unknown embedding model {model!r}.") from None


@transaction.atomic
def base_create(
    *,
    owner: Any,
    name: str,
    description: str = "",
    embedding_model: str = DEFAULT_EMBEDDING_MODEL,
    embedding_dimension: int | None = None,
    chunk_strategy: str = KnowledgeBase.ChunkStrategy.TOKENS,
    chunk_size: int = 256,
    chunk_overlap: int = 32,
) -> KnowledgeBase:
    """A new base of ``owner``; a name the owner already uses is a Conflict.

    ``embedding_dimension`` (seed 002's ``embedding_dim``) is optional and must match the model's.
    """
    name = _name_validate(name)
    dimension = _embedder_dimension(embedding_model)
    if embedding_dimension is not None and embedding_dimension != dimension:
        raise ValidationFailed(f"The model {embedding_model!r} makes vectors of {dimension} dimensions.")
    _chunking_validate(chunk_strategy, chunk_size, chunk_overlap)
    if KnowledgeBase.objects.filter(owner=owner, name=name).exists():
        raise Conflict(f"A knowledge base named {name!r} already exists.")
    try:
        with transaction.atomic():
            return KnowledgeBase.objects.create(
                owner=owner,
                name=name,
                description=description or "",
                embedding_model=embedding_model,
                embedding_dimension=dimension,
                chunk_strategy=chunk_strategy,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
            )
    except IntegrityError:  # a concurrent create of the same name
        raise Conflict(f"A knowledge base named {name!r} already exists.") from None


@transaction.atomic
def base_rename(*, base: KnowledgeBase, name: str) -> KnowledgeBase:
    name = _name_validate(name)
    if name == base.name:
        return base
    if KnowledgeBase.objects.filter(owner_id=base.owner_id, name=name).exists():
        raise Conflict(f"A knowledge base named {name!r} already exists.")
    base.name = name
    base.save(update_fields=["name", "updated_at"])
    return base


def base_update_chunking(
    *, base: KnowledgeBase, chunk_strategy: str, chunk_size: int, chunk_overlap: int
) -> KnowledgeBase:
    """New chunking settings; documents added from now on use them (``documents_reindex`` for the rest)."""
    _chunking_validate(chunk_strategy, chunk_size, chunk_overlap)
    base.chunk_strategy, base.chunk_size, base.chunk_overlap = chunk_strategy, chunk_size, chunk_overlap
    base.save(update_fields=["chunk_strategy", "chunk_size", "chunk_overlap", "updated_at"])
    return base


def base_delete(*, base: KnowledgeBase) -> None:
    """Delete a base, its documents, chunks and index rows (the triggers of the index follow)."""
    base_id = base.id
    with transaction.atomic():
        Chunk.objects.filter(base_id=base_id).delete()
        base.delete()
    vectors.forget(base_id)


def base_change_embedding_model(
    *, base: KnowledgeBase, embedding_model: str, progress: Progress | None = None
) -> KnowledgeBase:
    """Switch the base to another embedding model and re-index every document with it."""
    dimension = _embedder_dimension(embedding_model)
    if embedding_model == base.embedding_model:
        return base
    base.embedding_model, base.embedding_dimension = embedding_model, dimension
    base.save(update_fields=["embedding_model", "embedding_dimension", "updated_at"])
    documents_reindex(base=base, progress=progress)
    return base


def documents_reindex(*, base: KnowledgeBase, progress: Progress | None = None) -> int:
    """Run the pipeline again over every document of ``base``; how many ended ready."""
    ready = 0
    for document in list(Document.objects.filter(base=base)):
        try:
            document_ingest(document, progress=progress)
            ready += 1
        except IngestError:
            pass  # the document records its failure
    return ready


# --- Documents ------------------------------------------------------------------------------------


def _existing(base: KnowledgeBase, checksum: str) -> Document | None:
    return Document.objects.filter(base=base, checksum=checksum).first()


def _create_document(base: KnowledgeBase, checksum: str, **fields: Any) -> tuple[Document, bool]:
    existing = _existing(base, checksum)
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():
            return Document.objects.create(base=base, checksum=checksum, **fields), True
    except IntegrityError:  # the same content added concurrently
        existing = _existing(base, checksum)
        if existing is None:
            raise
        return existing, False


def document_add_text(
    *,
    base: KnowledgeBase,
    text: str,
    title: str = "",
    source: str = "text",
    source_type: str = Document.SourceType.TEXT,
    metadata: dict[str, Any] | None = None,
) -> tuple[Document, bool]:
    """A document from text already extracted (raw text, or seed 002's indexed results).

    The same text twice in one base is one document: the second call returns the first one and
    ``False``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValidationFailed("A document needs some text.")
    if source_type not in Document.SourceType.values:
        raise ValidationFailed(f"source_type must be one of {', '.join(Document.SourceType.values)}.")
    data = text.encode("utf-8")
    metadata = dict(metadata or {})
    title = (title or str(metadata.get("title") or ""))[:500]
    return _create_document(
        base,
        hashlib.sha256(data).hexdigest(),
        source=(source or "text")[:2048],
        source_type=source_type,
        title=title,
        size=len(data),
        text=text,
        metadata=metadata,
    )


def document_add_file(
    *, base: KnowledgeBase, stored_file: StoredFile, metadata: dict[str, Any] | None = None
) -> tuple[Document, bool]:
    """A document from a stored file (its text is extracted by ``document_ingest``)."""
    if stored_file.owner_id != base.owner_id:
        raise ValidationFailed("The file belongs to someone else.")
    if stored_file.content_type not in filetypes.DOCUMENT_TYPES:
        raise ValidationFailed("This type of file cannot be added to a knowledge base.")
    metadata = {"filename": stored_file.name, **(metadata or {})}
    return _create_document(
        base,
        stored_file.checksum,
        stored_file=stored_file,
        source=stored_file.name[:2048],
        source_type=Document.SourceType.FILE,
        title=str(metadata.get("title") or stored_file.name)[:500],
        size=stored_file.size,
        metadata=metadata,
    )


def document_add_bytes(
    *,
    base: KnowledgeBase,
    data: bytes,
    filename: str,
    source: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[Document, bool]:
    """A document from a file's bytes, kept as a stored file of the base's owner (folder
    ``knowledge``; the same bytes are stored once)."""
    if not data:
        raise ValidationFailed("The file is empty.")
    try:
        content_type = filetypes.sniff(data, filename)
    except filetypes.UnsupportedType as exc:
        raise ValidationFailed(f"Unsupported file: {exc}.") from None
    if content_type not in filetypes.DOCUMENT_TYPES:
        raise ValidationFailed("This type of file cannot be added to a knowledge base.")
    checksum = hashlib.sha256(data).hexdigest()
    existing = _existing(base, checksum)
    if existing is not None:
        return existing, False
    name = (filename or "document").rsplit("/", 1)[-1][:255] or "document"
    stored = StoredFile.objects.filter(owner_id=base.owner_id, folder=FILES_FOLDER, checksum=checksum).first()
    if stored is None:
        stored = StoredFile(
            owner_id=base.owner_id,
            name=name,
            folder=FILES_FOLDER,
            content_type=content_type,
            size=len(data),
            checksum=checksum,
        )
        stored.blob.save(name, ContentFile(data), save=False)
        try:
            with transaction.atomic():
                stored.save()
        except IntegrityError:
            stored.blob.delete(save=False)
            stored = StoredFile.objects.get(owner_id=base.owner_id, folder=FILES_FOLDER, checksum=checksum)
    document, created = document_add_file(base=base, stored_file=stored, metadata=metadata)
    if created and source:
        document.source = source[:2048]
        document.save(update_fields=["source"])
    return document, created


def _chunks_forget(document: Document) -> None:
    deleted, _ = Chunk.objects.filter(document=document).delete()
    if deleted:
        KnowledgeBase.objects.filter(pk=document.base_id).update(index_version=F("index_version") + 1)


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Delete a document with its chunks and index rows (its stored file stays: s002's to manage)."""
    _chunks_forget(document)
    document.delete()


@transaction.atomic
def documents_delete_by_source(*, base: KnowledgeBase, source: str) -> int:
    """Delete the documents of ``base`` with this source (seed 002's ``path_or_url``); how many."""
    documents = list(Document.objects.filter(base=base, source=source))
    for document in documents:
        document_delete(document=document)
    return len(documents)


# --- The pipeline ---------------------------------------------------------------------------------


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)


def _set_status(document: Document, status: str, error: str = "", **fields: Any) -> None:
    document.status, document.error = status, error
    for name, value in fields.items():
        setattr(document, name, value)
    Document.objects.filter(pk=document.pk).update(status=status, error=error, **fields)


def _extracted_text(document: Document, data: bytes | None) -> tuple[str, str]:
    """The document's text and format, reading its bytes when the text is not known yet."""
    if document.text and data is None:
        fmt = str(document.metadata.get("format") or "")
        if not fmt:
            fmt = "markdown" if document.source.lower().endswith((".md", ".markdown")) else "text"
        return document.text, fmt
    filename = str(document.metadata.get("filename") or document.source)
    content_type = None
    if data is None:
        if document.stored_file is None:
            raise IngestError("The document has no text and no file to read it from.")
        content_type = document.stored_file.content_type
        with document.stored_file.blob.open("rb") as handle:
            data = handle.read()
    extracted = extract(data, filename=filename, content_type=content_type)
    declared = {k: v for k, v in extracted.metadata.items() if v not in (None, "", [])}
    metadata = {**declared, **document.metadata, "format": extracted.format}
    title = document.title or str(metadata.get("title") or "")
    document.text, document.metadata, document.title = extracted.text, metadata, title[:500]
    Document.objects.filter(pk=document.pk).update(
        text=document.text, metadata=metadata, title=document.title
    )
    return extracted.text, extracted.format


def document_ingest(
    document: Document, *, progress: Progress | None = None, data: bytes | None = None
) -> Document:
    """Extract, chunk, embed and index ``document`` (``data``: bytes fetched for a URL source).

    Sync, and not to be called from a running event loop (the embedder is awaited through
    ``async_to_sync``): async callers use ``adocument_ingest``. Raises ``IngestError`` after
    marking the document failed.
    """
    base = document.base
    _set_status(document, Document.Status.PROCESSING)
    try:
        _report(progress, "extract", 0, 1)
        text, fmt = _extracted_text(document, data)
        _report(progress, "extract", 1, 1)
        if not text.strip():
            raise IngestError("The document holds no text.")

        pieces = chunk_text(
            text, fmt=fmt, strategy=base.chunk_strategy, size=base.chunk_size, overlap=base.chunk_overlap
        )
        _report(progress, "chunk", len(pieces), len(pieces))

        embedder = embedder_for(base.embedding_model)
        embeddings: list[np.ndarray] = []
        for start in range(0, len(pieces), EMBED_BATCH):
            batch = [piece.text for piece in pieces[start : start + EMBED_BATCH]]
            try:
                embedded = async_to_sync(embedder.embed)(batch)
            except Exception as exc:
                logger.warning("knowledge: embedding failed for document %s: %s", document.pk, exc)
                raise IngestError(
                    "The embedding model could not embed the document.", retryable=True
                ) from exc
            embeddings.append(np.asarray(embedded, dtype="<f4"))
            _report(progress, "embed", min(start + EMBED_BATCH, len(pieces)), len(pieces))

        _report(progress, "index", 0, len(pieces))
        _index(document, pieces, embeddings)
        _report(progress, "index", len(pieces), len(pieces))
    except ExtractionError as exc:
        _set_status(document, Document.Status.FAILED, str(exc)[:2000])
        raise IngestError(str(exc)) from exc
    except IngestError as exc:
        _set_status(document, Document.Status.FAILED, exc.message)
        raise
    except Exception as exc:
        logger.exception("knowledge: ingest of document %s failed", document.pk)
        message = "The document could not be processed."
        _set_status(document, Document.Status.FAILED, message)
        raise IngestError(message, retryable=True) from exc
    return document


async def adocument_ingest(
    document: Document, *, progress: Progress | None = None, data: bytes | None = None
) -> Document:
    """``document_ingest`` from async code (in a worker thread of its own)."""
    return await sync_to_async(document_ingest, thread_sensitive=False)(
        document, progress=progress, data=data
    )


def _index(document: Document, pieces: list[Any], embeddings: list[np.ndarray]) -> None:
    matrix = np.concatenate(embeddings) if embeddings else np.zeros((0, 0), dtype="<f4")
    rows = [
        Chunk(
            base_id=document.base_id,
            document=document,
            position=piece.position,
            title=(piece.title or "")[:500],
            text=piece.text,
            embedding=matrix[i].astype("<f4").tobytes(),
        )
        for i, piece in enumerate(pieces)
    ]
    with transaction.atomic():
        Chunk.objects.filter(document=document).delete()
        created = Chunk.objects.bulk_create(rows, batch_size=500)
        index.store_vectors(
            alias=Chunk.objects.db,
            rows=[(c.id, document.base_id, document.id, bytes(c.embedding)) for c in created],
        )
        _set_status(document, Document.Status.READY, chunk_count=len(created))
        KnowledgeBase.objects.filter(pk=document.base_id).update(index_version=F("index_version") + 1)
