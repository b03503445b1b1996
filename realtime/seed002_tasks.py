"""Seed 002's data-processing paths (docs/dialects.md "Seed 002: tasks"), over the knowledge
tasks (knowledge/tasks.py), in the seed's own shapes:

- ``POST /api/tasks`` ``{source, source_type, chunking_strategy, index_name, additional_params}``
  -> ``{task_id}``; ``POST /api/tasks/batch`` ``{sources: [...]}`` -> ``{task_ids}``.
- ``GET /api/tasks`` -> ``{tasks: [...]}``; ``GET /api/tasks/{id}`` -> ``{id, status, created_at,
  updated_at, error}``; ``GET /api/tasks/{id}/details`` adds ``results``.
- ``GET /api/tasks/indices/{index_name}/tasks`` -> ``{index_name, files: [{path_or_url, status}]}``
  (the base's documents with a task still queued or running).
- ``POST /api/file/upload`` (multipart ``file`` repeated, ``chunking_strategy``, ``index_name``)
  -> ``{message, uploaded_files, process_tasks: {task_id, task_ids}}``.
- ``POST /api/indices/{index_name}/documents`` ``{task_id, results: [{metadata, source, text,
  source_type}]}`` -> ``{success, message, total_indexed, total_submitted}`` (each result a
  document of text, with its own ingest task).

A source is resolved by its ``source_type``: ``url`` (or an http(s) source) is fetched through
the egress policy; ``text`` is the text itself; anything else (``file``, ``minio``, ``local``)
names a stored file of the caller by ``folder/name`` (or id). An ``index_name`` that does not
exist yet is created (with ``chunking_strategy`` ``by_title`` -> headings, otherwise tokens);
``/documents`` needs an existing index (404). Task states are Celery's, as the seed's server
(Nexent, Celery-based) answers them: PENDING, STARTED, SUCCESS, FAILURE; a file's status is
WAIT_FOR_PROCESSING, PROCESSING, COMPLETED or PROCESS_FAILED.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from core.auth import User
from core.errors import NexusError, NotFound, ValidationFailed, parse_uuid
from files import selectors as file_selectors
from files.services import file_store
from knowledge import selectors, services
from knowledge import tasks as ingest_tasks
from knowledge.fetch import fetch_url
from knowledge.models import Document, IngestTask, KnowledgeBase
from realtime import http_views as native
from realtime.seed002_files import _parse_upload, methods_allow

TASK_STATES = {"queued": "PENDING", "running": "STARTED", "done": "SUCCESS", "failed": "FAILURE"}
FILE_STATES = {
    "pending": "WAIT_FOR_PROCESSING",
    "processing": "PROCESSING",
    "ready": "COMPLETED",
    "failed": "PROCESS_FAILED",
}
MAX_BATCH = 100
MAX_RESULTS = 1000


def _task_body(task: IngestTask, *, details: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": str(task.id),
        "status": TASK_STATES.get(task.status, task.status),
        "created_at": task.created_at.isoformat(),
        "updated_at": task.updated_at.isoformat(),
        "error": task.error or "",
    }
    if details:
        body["results"] = task.results or {}
    return body


def _str(body: dict[str, Any], name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise ValidationFailed(f"{name} is required.", details={name: ["This field is required."]})
        return ""
    if not isinstance(value, str) or "\x00" in value:
        raise ValidationFailed(f"{name} is a string.", details={name: ["A string."]})
    return value


def _base_for(user: User, index_name: str, chunking_strategy: str) -> KnowledgeBase:
    base = selectors.bases_readable(user).filter(name=index_name).first()
    if base is not None:
        return base
    strategy = "headings" if chunking_strategy in ("by_title", "headings") else "tokens"
    try:
        return services.base_create(owner=user, name=index_name, chunk_strategy=strategy)
    except NexusError as exc:
        if exc.code == "conflict":  # created concurrently
            return selectors.base_get_for_user(user=user, name=index_name)
        raise


def _source_document(
    user: User, base: KnowledgeBase, source: str, source_type: str, params: dict[str, Any]
) -> tuple[Document, bool]:
    if source_type == "text":
        return services.document_add_text(base=base, text=source, title=str(params.get("title") or ""))
    try:
        stored = file_selectors.file_get_by_object_name(user=user, object_name=source)
    except NotFound:
        stored = file_selectors.file_get_for_user(user=user, file_id=source)
    return services.document_add_file(base=base, stored_file=stored)


async def _create(user: User, spec: Any) -> IngestTask:
    if not isinstance(spec, dict):
        raise ValidationFailed("A task is a JSON object.")
    source = _str(spec, "source")
    source_type = _str(spec, "source_type", required=False).lower()
    index_name = _str(spec, "index_name")
    chunking = _str(spec, "chunking_strategy", required=False)
    params = spec.get("additional_params") or {}
    if not isinstance(params, dict):
        raise ValidationFailed(
            "additional_params is an object.", details={"additional_params": ["An object."]}
        )
    base = await sync_to_async(_base_for)(user, index_name, chunking)
    if source_type == "url" or source.lower().startswith(("http://", "https://")):
        data, filename = await fetch_url(source)
        document, created = await sync_to_async(_add_url)(base, data, filename, source)
    else:
        document, created = await sync_to_async(_source_document)(user, base, source, source_type, params)
    return await ingest_tasks.aingest_start(user, document, created=created)


def _add_url(base: KnowledgeBase, data: bytes, filename: str, url: str) -> tuple[Document, bool]:
    document, created = services.document_add_bytes(
        base=base, data=data, filename=filename, source=url, metadata={"url": url}
    )
    if created:
        Document.objects.filter(pk=document.pk).update(source_type=Document.SourceType.URL)
    return document, created


@native.authenticated_endpoint
async def tasks_root(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /api/tasks`` (create one) and ``GET /api/tasks`` (list)."""
    methods_allow(request, "GET", "POST")
    if request.method == "POST":
        task = await _create(user, native._json_body(request))
        return JsonResponse({"task_id": str(task.id)})
    rows = await sync_to_async(_tasks_of)(user)
    return JsonResponse({"tasks": [_task_body(task) for task in rows]})


def _tasks_of(user: User) -> list[IngestTask]:
    return list(IngestTask.objects.filter(owner=user).order_by("-created_at")[:500])


@native.authenticated_endpoint
async def tasks_batch(request: HttpRequest, *, user: User) -> HttpResponseBase:
    methods_allow(request, "POST")
    sources = native._json_body(request).get("sources")
    if not isinstance(sources, list) or not sources:
        raise ValidationFailed("sources is a non-empty list.", details={"sources": ["A non-empty list."]})
    if len(sources) > MAX_BATCH:
        raise ValidationFailed(f"At most {MAX_BATCH} sources.", details={"sources": ["Too many."]})
    ids = [str((await _create(user, spec)).id) for spec in sources]
    return JsonResponse({"task_ids": ids})


@native.authenticated_endpoint
async def task_status(request: HttpRequest, task_id: str, *, user: User) -> HttpResponseBase:
    methods_allow(request, "GET")
    task = await sync_to_async(selectors.task_get_for_user)(user=user, task_id=task_id)
    return JsonResponse(_task_body(task))


@native.authenticated_endpoint
async def task_details(request: HttpRequest, task_id: str, *, user: User) -> HttpResponseBase:
    methods_allow(request, "GET")
    task = await sync_to_async(selectors.task_get_for_user)(user=user, task_id=task_id)
    return JsonResponse(_task_body(task, details=True))


def _index_files(user: User, index_name: str) -> list[dict[str, str]]:
    base = selectors.base_get_for_user(user=user, name=index_name)
    active = IngestTask.objects.filter(base=base, status__in=ingest_tasks.ACTIVE).select_related("document")
    files, seen = [], set()
    for task in active.order_by("created_at"):
        if task.document is None or task.document_id in seen:
            continue
        seen.add(task.document_id)
        files.append(
            {"path_or_url": task.document.source, "status": FILE_STATES.get(task.document.status, "")}
        )
    return files


@native.authenticated_endpoint
async def index_tasks(request: HttpRequest, index_name: str, *, user: User) -> HttpResponseBase:
    methods_allow(request, "GET")
    files = await sync_to_async(_index_files)(user, index_name)
    return JsonResponse({"index_name": index_name, "files": files})


# --- POST /api/file/upload ---------------------------------------------------------------------


def _store_and_add(user: User, base: KnowledgeBase, upload: Any) -> tuple[Document, bool]:
    stored, _ = file_store(owner=user, name=upload.name or "", content=upload, folder=services.FILES_FOLDER)
    return services.document_add_file(base=base, stored_file=stored)


@native.authenticated_endpoint
async def file_upload(request: HttpRequest, *, user: User) -> HttpResponseBase:
    methods_allow(request, "POST")
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise ValidationFailed("Send the files as multipart/form-data (fields: file, index_name).")
    _, uploads = await sync_to_async(_parse_upload)(request)
    index_name = (request.POST.get("index_name") or "").strip()
    if not index_name:
        raise ValidationFailed("index_name is required.", details={"index_name": ["This field is required."]})
    if not uploads:
        raise ValidationFailed("No files: send them in the file field.", details={"file": ["Required."]})
    base = await sync_to_async(_base_for)(user, index_name, request.POST.get("chunking_strategy") or "")
    names, task_ids = [], []
    for upload in uploads:
        document, created = await sync_to_async(_store_and_add)(user, base, upload)
        task = await ingest_tasks.aingest_start(user, document, created=created)
        names.append(upload.name or document.source)
        task_ids.append(str(task.id))
    return JsonResponse(
        {
            "message": f"Uploaded {len(names)} files; processing started.",
            "uploaded_files": names,
            "process_tasks": {"task_id": task_ids[0], "task_ids": task_ids},
        }
    )


# --- POST /api/indices/{index_name}/documents --------------------------------------------------


def _index_results(user: User, index_name: str, results: list[Any]) -> list[Document | None]:
    base = selectors.base_get_for_user(user=user, name=index_name)
    added: list[Document | None] = []
    for item in results:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) or not item["text"].strip():
            added.append(None)
            continue
        raw_metadata = item.get("metadata")
        metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
        source = item.get("source") if isinstance(item.get("source"), str) else ""
        raw_type = item.get("source_type")
        source_type = (
            raw_type if isinstance(raw_type, str) and raw_type in Document.SourceType.values else "text"
        )
        try:
            document, created = services.document_add_text(
                base=base,
                text=item["text"].replace("\x00", ""),
                source=source or str(metadata.get("filename") or "text"),
                source_type=source_type,
                metadata={k: v for k, v in metadata.items() if isinstance(k, str)},
            )
        except ValidationFailed:
            added.append(None)
            continue
        document._nexus_created = created  # type: ignore[attr-defined]
        added.append(document)
    return added


@native.authenticated_endpoint
async def index_documents(request: HttpRequest, index_name: str, *, user: User) -> HttpResponseBase:
    methods_allow(request, "POST")
    body = native._json_body(request)
    results = body.get("results")
    if not isinstance(results, list):
        raise ValidationFailed("results is a list.", details={"results": ["A list."]})
    if len(results) > MAX_RESULTS:
        raise ValidationFailed(f"At most {MAX_RESULTS} results.", details={"results": ["Too many."]})
    if body.get("task_id") not in (None, ""):
        parse_uuid(body.get("task_id"), what="Task")  # a malformed id is a task that does not exist
    documents = await sync_to_async(_index_results)(user, index_name, results)
    indexed = 0
    for document in documents:
        if document is None:
            continue
        await ingest_tasks.aingest_start(user, document, created=getattr(document, "_nexus_created", True))
        indexed += 1
    return JsonResponse(
        {
            "success": indexed == len(results),
            "message": f"Indexed {indexed} of {len(results)} documents.",
            "total_indexed": indexed,
            "total_submitted": len(results),
        }
    )
