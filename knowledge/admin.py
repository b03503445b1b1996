"""The admin of knowledge bases: bases with their document counts, documents with their state,
chunks read-only, ingest tasks with their stage and progress. The document re-index action and
the task retry action queue ingest tasks (knowledge/tasks.py): the pipeline runs where tasks run
(this process inline, a worker in worker mode), never in the admin's request."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from knowledge import services, tasks
from knowledge.models import Chunk, Document, IngestTask, KnowledgeBase


@admin.register(KnowledgeBase)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    list_display = ("name", "owner", "embedding_model", "chunk_strategy", "document_count", "updated_at")
    search_fields = ("name", "owner__username")
    list_filter = ("embedding_model", "chunk_strategy")
    readonly_fields = ("id", "embedding_dimension", "index_version", "created_at", "updated_at")

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeBase]:
        return (
            super().get_queryset(request).select_related("owner").annotate(document_total=Count("documents"))
        )

    @admin.display(description="documents", ordering="document_total")
    def document_count(self, base: Any) -> int:
        return int(base.document_total)

    def delete_model(self, request: HttpRequest, obj: KnowledgeBase) -> None:
        services.base_delete(base=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[KnowledgeBase]) -> None:
        for base in queryset:
            services.base_delete(base=base)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("__str__", "base", "source_type", "status", "chunk_count", "error", "updated_at")
    list_filter = ("status", "source_type")
    search_fields = ("title", "source", "base__name")
    readonly_fields = (
        "id",
        "base",
        "stored_file",
        "checksum",
        "size",
        "status",
        "error",
        "chunk_count",
        "created_at",
        "updated_at",
    )
    exclude = ("text",)
    actions = ("reindex",)

    @admin.action(description="Re-index the selected documents")
    def reindex(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        queued = 0
        for document in queryset.select_related("base", "base__owner"):
            tasks.ingest_start(document.base.owner, document, created=True)
            queued += 1
        if queued:
            self.message_user(request, f"{queued} document(s) queued for re-indexing.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        services.document_delete(document=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        for document in queryset:
            services.document_delete(document=document)


@admin.register(Chunk)
class ChunkAdmin(admin.ModelAdmin):
    list_display = ("__str__", "base", "title", "position")
    search_fields = ("title",)
    exclude = ("embedding",)
    readonly_fields = ("base", "document", "position", "title", "text")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Chunk]:
        return super().get_queryset(request).select_related("base", "document")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(IngestTask)
class IngestTaskAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "base",
        "document",
        "status",
        "stage",
        "progress",
        "attempts",
        "error",
        "updated_at",
    )
    list_filter = ("status", "stage")
    list_select_related = ("base", "document")
    readonly_fields = (
        "id",
        "owner",
        "base",
        "document",
        "status",
        "stage",
        "progress_done",
        "progress_total",
        "attempts",
        "error",
        "results",
        "created_at",
        "updated_at",
        "heartbeat_at",
        "claimed_by",
    )
    actions = ("retry",)

    @admin.display(description="progress")
    def progress(self, task: IngestTask) -> str:
        if not task.progress_total:
            return "-"
        return (
            f"{task.progress_done}/{task.progress_total} ({100 * task.progress_done // task.progress_total}%)"
        )

    @admin.action(description="Retry the selected tasks (a new task each)")
    def retry(self, request: HttpRequest, queryset: QuerySet[IngestTask]) -> None:
        queued, skipped = 0, 0
        for task in queryset.select_related("owner"):
            if task.status in tasks.ACTIVE or task.document_id is None:
                skipped += 1
                continue
            tasks.task_retry(task)
            queued += 1
        if queued:
            self.message_user(request, f"{queued} task(s) queued again.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request,
                f"{skipped} task(s) skipped: still queued/running, or the document is gone.",
                messages.WARNING,
            )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
