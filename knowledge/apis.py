"""The knowledge REST API (docs/api.md "Knowledge"): ``/api/knowledge/bases/`` (CRUD), a base's
documents (list, upload a file, add text, add a URL, get, delete), ``/api/knowledge/search/`` and
``/api/knowledge/tasks/`` (list, get; the SSE follower of a task is realtime/knowledge_views.py).
A user sees only their own bases, documents and tasks: anyone else's answer 404.

Adding a document stores it (a file through ``files.services.file_store``: size, type by content,
quota), records the document (the same bytes twice in a base are one document) and queues its
ingest task (``knowledge.tasks.ingest_start``): the answer carries both, 201 when new, 200 when
the document was already there.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from django.core.exceptions import SuspiciousOperation
from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NotFound, ValidationFailed, parse_uuid
from files.services import file_store
from knowledge import selectors, services, tasks
from knowledge.fetch import fetch_url
from knowledge.models import Document, IngestTask, KnowledgeBase
from knowledge.search import search_sync
from knowledge.serializers import (
    BaseCreateSerializer,
    BaseSerializer,
    BaseUpdateSerializer,
    DocumentAddedSerializer,
    DocumentSerializer,
    DocumentTextSerializer,
    DocumentUploadSerializer,
    DocumentUrlSerializer,
    HitSerializer,
    SearchResultSerializer,
    SearchSerializer,
    TaskSerializer,
)

TAGS = ["knowledge"]
CONFLICT = OpenApiResponse(description="You already have a knowledge base of that name.")
TOO_LARGE = OpenApiResponse(description="file_too_large: over the file size limit.")
UPSTREAM = OpenApiResponse(description="upstream_error: the address (or the embedding model) failed.")
FILES_FOLDER = services.FILES_FOLDER


def _base(user: Any, base_id: Any) -> KnowledgeBase:
    base = selectors.bases_readable(user).filter(pk=parse_uuid(base_id, what="Knowledge base")).first()
    if base is None:
        raise NotFound("Knowledge base not found.")
    return base


def _added(user: Any, document: Document, created: bool) -> Response:
    task = tasks.ingest_start(user, document, created=created)
    document.refresh_from_db()
    body = {
        "document": DocumentSerializer(document, context={"tasks": {document.pk: task}}).data,
        "task": TaskSerializer(task).data,
        "created": created,
    }
    return Response(body, status=201 if created else 200)


class BaseListView(APIView):
    @extend_schema(tags=TAGS, summary="List your knowledge bases", responses={200: BaseSerializer(many=True)})
    def get(self, request: Request) -> Response:
        bases = selectors.bases_readable(request.user).annotate(document_total=Count("documents"))
        return Response(BaseSerializer(bases, many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Create a knowledge base",
        description="409 conflict when you already have a base of that name.",
        request=BaseCreateSerializer,
        responses={201: BaseSerializer, 409: CONFLICT},
    )
    def post(self, request: Request) -> Response:
        form = BaseCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        base = services.base_create(owner=request.user, **form.validated_data)
        return Response(BaseSerializer(base).data, status=201)


class BaseDetailView(APIView):
    @extend_schema(tags=TAGS, summary="A knowledge base", responses={200: BaseSerializer})
    def get(self, request: Request, base_id: Any) -> Response:
        return Response(BaseSerializer(_base(request.user, base_id)).data)

    @extend_schema(
        tags=TAGS,
        summary="Rename or describe a knowledge base",
        request=BaseUpdateSerializer,
        responses={200: BaseSerializer, 409: CONFLICT},
    )
    def patch(self, request: Request, base_id: Any) -> Response:
        base = _base(request.user, base_id)
        form = BaseUpdateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        if "name" in form.validated_data:
            base = services.base_rename(base=base, name=form.validated_data["name"])
        if "description" in form.validated_data:
            base.description = form.validated_data["description"]
            base.save(update_fields=["description", "updated_at"])
        return Response(BaseSerializer(base).data)

    @extend_schema(tags=TAGS, summary="Delete a knowledge base with its documents", responses={204: None})
    def delete(self, request: Request, base_id: Any) -> Response:
        services.base_delete(base=_base(request.user, base_id))
        return Response(status=204)


class DocumentListView(APIView):
    def get_parsers(self) -> list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return super().get_parsers()

    @extend_schema(tags=TAGS, summary="A base's documents", responses={200: DocumentSerializer(many=True)})
    def get(self, request: Request, base_id: Any) -> Response:
        base = _base(request.user, base_id)
        documents = list(selectors.documents_of_base(base)[:1000])
        latest: dict[Any, IngestTask] = {}
        for task in IngestTask.objects.filter(document__in=documents).order_by("created_at"):
            latest[task.document_id] = task
        return Response(DocumentSerializer(documents, many=True, context={"tasks": latest}).data)

    @extend_schema(
        tags=TAGS,
        summary="Upload a file into a base",
        description="multipart/form-data `file` (txt, md, html, pdf, docx; the type is read from the "
        "bytes). The document and its ingest task: 201 new, 200 when the same bytes are already in "
        "the base. 413 file_too_large, 415 unsupported_media_type, 403 quota_exceeded.",
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={201: DocumentAddedSerializer, 200: DocumentAddedSerializer, 413: TOO_LARGE},
    )
    def post(self, request: Request, base_id: Any) -> Response:
        base = _base(request.user, base_id)
        try:
            data = request.data
        except SuspiciousOperation as exc:
            raise ValidationFailed(f"The upload could not be read: {exc}") from None
        form = DocumentUploadSerializer(data=data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        stored, _ = file_store(
            owner=request.user, name=upload.name or "", content=upload, folder=FILES_FOLDER
        )
        document, created = services.document_add_file(base=base, stored_file=stored)
        return _added(request.user, document, created)


class DocumentTextView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Add text to a base",
        request=DocumentTextSerializer,
        responses={201: DocumentAddedSerializer, 200: DocumentAddedSerializer, 413: TOO_LARGE},
    )
    def post(self, request: Request, base_id: Any) -> Response:
        base = _base(request.user, base_id)
        form = DocumentTextSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        document, created = services.document_add_text(
            base=base,
            text=form.validated_data["text"],
            title=form.validated_data["title"],
            metadata=form.validated_data["metadata"],
        )
        return _added(request.user, document, created)


class DocumentUrlView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Add a web page or file by URL",
        description="Fetched through the egress policy (public addresses only unless the operator "
        "allows more: 403 egress_denied), at most the file size limit (413), typed by its bytes.",
        request=DocumentUrlSerializer,
        responses={
            201: DocumentAddedSerializer,
            200: DocumentAddedSerializer,
            413: TOO_LARGE,
            502: UPSTREAM,
        },
    )
    def post(self, request: Request, base_id: Any) -> Response:
        base = _base(request.user, base_id)
        form = DocumentUrlSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        url = form.validated_data["url"]
        data, filename = async_to_sync(fetch_url)(url)
        document, created = services.document_add_bytes(
            base=base, data=data, filename=filename, source=url, metadata={"url": url}
        )
        if created:
            Document.objects.filter(pk=document.pk).update(source_type=Document.SourceType.URL)
            document.source_type = Document.SourceType.URL
        return _added(request.user, document, created)


class DocumentDetailView(APIView):
    @extend_schema(tags=TAGS, summary="A document", responses={200: DocumentSerializer})
    def get(self, request: Request, base_id: Any, document_id: Any) -> Response:
        document = selectors.document_get(base=_base(request.user, base_id), document_id=document_id)
        task = IngestTask.objects.filter(document=document).order_by("-created_at").first()
        return Response(DocumentSerializer(document, context={"tasks": {document.pk: task}}).data)

    @extend_schema(tags=TAGS, summary="Delete a document", responses={204: None})
    def delete(self, request: Request, base_id: Any, document_id: Any) -> Response:
        document = selectors.document_get(base=_base(request.user, base_id), document_id=document_id)
        services.document_delete(document=document)
        return Response(status=204)


class SearchView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Search knowledge bases",
        description="mode accurate (lexical), semantic, or hybrid (default); hits best first with "
        "score and score_details. A base that is not yours is 404.",
        request=SearchSerializer,
        responses={
            200: SearchResultSerializer,
            404: OpenApiResponse(description="A base that does not exist or is not yours."),
            502: UPSTREAM,
        },
    )
    def post(self, request: Request) -> Response:
        form = SearchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        wanted = list(dict.fromkeys(data["bases"]))
        bases = list(selectors.bases_readable(request.user).filter(pk__in=wanted))
        if len(bases) != len(wanted):
            raise NotFound("Knowledge base not found.")
        hits = search_sync(
            bases,
            data["query"],
            mode=data["mode"],
            top_k=data["top_k"],
            weight_accurate=data["weight_accurate"],
            document_ids=data.get("documents") or None,
            metadata=data["metadata"] or None,
        )
        return Response({"hits": HitSerializer(hits, many=True).data})


class TaskListView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="Your ingest tasks, newest first",
        parameters=[
            OpenApiParameter("status", str, enum=list(IngestTask.Status.values)),
            OpenApiParameter("base", str, description="A base's id."),
        ],
        responses={200: TaskSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        queryset = IngestTask.objects.filter(owner_id=request.user.pk)
        status = request.query_params.get("status")
        if status is not None:
            if status not in IngestTask.Status.values:
                raise ValidationFailed(f"status is one of {', '.join(IngestTask.Status.values)}.")
            queryset = queryset.filter(status=status)
        base = request.query_params.get("base")
        if base:
            queryset = queryset.filter(base=_base(request.user, base))
        return Response(TaskSerializer(queryset.order_by("-created_at")[:500], many=True).data)


class TaskDetailView(APIView):
    @extend_schema(tags=TAGS, summary="An ingest task", responses={200: TaskSerializer})
    def get(self, request: Request, task_id: Any) -> Response:
        return Response(TaskSerializer(selectors.task_get_for_user(user=request.user, task_id=task_id)).data)
