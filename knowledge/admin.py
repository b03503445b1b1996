"""The admin of knowledge bases: bases with their document counts, documents with their state,
chunks read-only, ingest tasks, and a re-index action (the pipeline, run in the request for now:
the task runner takes it over)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from knowledge import services
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
        done, failed = 0, []
        for document in queryset.select_related("base", "stored_file"):
            try:
                services.document_ingest(document)
                done += 1
            except services.IngestError as exc:
                failed.append(f"{document}: {exc.message}")
        if done:
            self.message_user(request, f"{done} document(s) re-indexed.", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, problem, messages.ERROR)

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
        "progress_done",
        "progress_total",
        "attempts",
    )
    list_filter = ("status", "stage")
    readonly_fields = ("id", "created_at", "updated_at", "heartbeat_at", "claimed_by")
