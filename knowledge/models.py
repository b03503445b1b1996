"""Knowledge bases (SPEC section 10; seed 002 calls them indices): bases, documents, chunks, tasks.

A base is owned by one user and named uniquely among that user's bases (seed 002 addresses a base
by ``index_name``). A document is one source (a stored file, a URL, or raw text) whose text is
cut into chunks; each chunk carries its embedding as float32 bytes. The lexical index of the
chunks lives beside the table, per database (``knowledge/index``): an FTS5 table kept by triggers
on SQLite, a generated ``tsvector`` column with a GIN index on PostgreSQL, and a pgvector table
where that extension is installed.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from knowledge.embeddings import DEFAULT_EMBEDDING_MODEL


class KnowledgeBase(models.Model):
    """A named collection of documents searched together, with one embedding model."""

    class ChunkStrategy(models.TextChoices):
        TOKENS = "tokens", "Windows of tokens"
        HEADINGS = "headings", "Sections under headings"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="knowledge_bases"
    )
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    embedding_model = models.CharField(max_length=200, default=DEFAULT_EMBEDDING_MODEL)
    embedding_dimension = models.PositiveIntegerField(default=256)
    chunk_strategy = models.CharField(
        max_length=16, choices=ChunkStrategy.choices, default=ChunkStrategy.TOKENS
    )
    chunk_size = models.PositiveIntegerField(default=256)
    chunk_overlap = models.PositiveIntegerField(default=32)
    # Bumped whenever the base's chunks change: the per-process vector caches key on it.
    index_version = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="knowledge_base_name_per_owner"),
        ]

    def __str__(self) -> str:
        return self.name


class Document(models.Model):
    """One source of a base: its text (once extracted), its state in the pipeline, its metadata."""

    class SourceType(models.TextChoices):
        FILE = "file", "File"
        URL = "url", "URL"
        TEXT = "text", "Text"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROCESSING = "processing", "Processing"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    stored_file = models.ForeignKey(
        "files.StoredFile", null=True, blank=True, on_delete=models.SET_NULL, related_name="documents"
    )
    source = models.CharField(max_length=2048)
    source_type = models.CharField(max_length=8, choices=SourceType.choices)
    title = models.CharField(max_length=500, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, default="")
    size = models.BigIntegerField(default=0)
    checksum = models.CharField(max_length=64)
    # The extracted text (or the text given as is): a re-index (a new embedding model, a new
    # chunking) starts from it without reading the source again.
    text = models.TextField(blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["base", "checksum"], name="knowledge_document_once_per_base"),
        ]
        indexes = [models.Index(fields=["base", "source"], name="knowledge_doc_base_source")]

    def __str__(self) -> str:
        return self.title or self.source


class Chunk(models.Model):
    """A passage of a document, with its embedding (float32, little-endian, unit length).

    The column order matters on SQLite: ``embedding`` sits before ``text`` so a vector scan reads
    it without walking the passage's overflow pages.
    """

    base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    embedding = models.BinaryField()
    title = models.CharField(max_length=500, blank=True, default="")
    text = models.TextField()

    class Meta:
        ordering = ["document_id", "position"]
        indexes = [models.Index(fields=["base", "document"], name="knowledge_chunk_base_doc")]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"


class IngestTask(models.Model):
    """One run of the ingest pipeline over one document (seed 002's data-processing task).

    The task runner claims it (``claimed_by``, ``heartbeat_at``), calls
    ``knowledge.services.document_ingest`` and records the stage and progress it reports.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Stage(models.TextChoices):
        EXTRACT = "extract", "Extract"
        CHUNK = "chunk", "Chunk"
        EMBED = "embed", "Embed"
        INDEX = "index", "Index"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ingest_tasks")
    base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="tasks")
    document = models.ForeignKey(
        Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=16, choices=Stage.choices, blank=True, default="")
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    claimed_by = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    results = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "heartbeat_at"], name="knowledge_task_status_beat"),
            models.Index(fields=["base", "status"], name="knowledge_task_base_status"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.status}"
