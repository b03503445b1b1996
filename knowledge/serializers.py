"""The shapes of the knowledge REST API (knowledge/apis.py, docs/api.md "Knowledge")."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from knowledge.chunking import STRATEGIES
from knowledge.embeddings import DEFAULT_EMBEDDING_MODEL
from knowledge.models import Document, IngestTask, KnowledgeBase
from knowledge.search import MAX_TOP_K, MODES


class BaseSerializer(serializers.ModelSerializer):
    document_count = serializers.SerializerMethodField()

    class Meta:
        model = KnowledgeBase
        fields = [
            "id",
            "name",
            "description",
            "embedding_model",
            "embedding_dimension",
            "chunk_strategy",
            "chunk_size",
            "chunk_overlap",
            "document_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField())
    def get_document_count(self, base: KnowledgeBase) -> int:
        total = getattr(base, "document_total", None)
        return int(total) if total is not None else base.documents.count()


class BaseCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000, default="")
    embedding_model = serializers.CharField(required=False, max_length=200, default=DEFAULT_EMBEDDING_MODEL)
    chunk_strategy = serializers.ChoiceField(choices=list(STRATEGIES), required=False, default="tokens")
    chunk_size = serializers.IntegerField(required=False, min_value=16, max_value=8192, default=256)
    chunk_overlap = serializers.IntegerField(required=False, min_value=0, max_value=4096, default=32)


class BaseUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True, max_length=10_000)


class TaskSerializer(serializers.ModelSerializer):
    stage = serializers.CharField(
        read_only=True, help_text="extract, chunk, embed, index; empty before the first"
    )
    done = serializers.IntegerField(source="progress_done", read_only=True)
    total = serializers.IntegerField(source="progress_total", read_only=True)

    class Meta:
        model = IngestTask
        fields = [
            "id",
            "status",
            "stage",
            "done",
            "total",
            "document",
            "base",
            "attempts",
            "error",
            "results",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class DocumentSerializer(serializers.ModelSerializer):
    task = serializers.SerializerMethodField()

    class Meta:
        model = Document
        fields = [
            "id",
            "base",
            "title",
            "source",
            "source_type",
            "status",
            "error",
            "size",
            "checksum",
            "chunk_count",
            "metadata",
            "stored_file",
            "task",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    @extend_schema_field(TaskSerializer(allow_null=True))
    def get_task(self, document: Document) -> dict[str, Any] | None:
        task = self.context.get("tasks", {}).get(document.pk)
        return TaskSerializer(task).data if task is not None else None


class DocumentUploadSerializer(serializers.Serializer):
    file = serializers.FileField()


class DocumentTextSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=5_000_000, trim_whitespace=False)
    title = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
    metadata = serializers.DictField(required=False, default=dict)


class DocumentUrlSerializer(serializers.Serializer):
    url = serializers.CharField(max_length=2048)


class DocumentAddedSerializer(serializers.Serializer):
    document = DocumentSerializer()
    task = TaskSerializer()
    created = serializers.BooleanField()


class SearchSerializer(serializers.Serializer):
    bases = serializers.ListField(child=serializers.UUIDField(), min_length=1, max_length=50)
    query = serializers.CharField(max_length=4000)
    mode = serializers.ChoiceField(choices=list(MODES), required=False, default="hybrid")
    top_k = serializers.IntegerField(required=False, min_value=1, max_value=MAX_TOP_K, default=5)
    weight_accurate = serializers.FloatField(required=False, min_value=0.0, max_value=1.0, default=0.5)
    documents = serializers.ListField(child=serializers.UUIDField(), required=False, max_length=1000)
    metadata = serializers.DictField(required=False, default=dict)


class HitSerializer(serializers.Serializer):
    chunk = serializers.IntegerField(source="chunk_id")
    document = serializers.UUIDField(source="document_id")
    base = serializers.UUIDField(source="base_id")
    base_name = serializers.CharField(source="base")
    title = serializers.CharField()
    text = serializers.CharField()
    position = serializers.IntegerField()
    filename = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named source
    source_type = serializers.CharField()
    score = serializers.FloatField()
    score_details = serializers.DictField(child=serializers.FloatField())
    metadata = serializers.DictField()


class SearchResultSerializer(serializers.Serializer):
    hits = HitSerializer(many=True)
