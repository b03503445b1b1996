"""Seed 002's "Elasticsearch App" over the knowledge bases (docs/knowledge.md, "Seed 002 paths";
docs/dialects.md, "Seed 002: knowledge"): ``/api/indices*`` (an index is one of the caller's
knowledge bases, addressed by its name) and ``POST /api/file/preprocess`` (the text of files, over
SSE, without storing them).

The answers are the seed's own bare shapes (no envelope); errors answer in Nexus's one shape
``{detail, code, timestamp}`` (the seed's FastAPI answers ``{detail}``). A base of another user
does not exist for the caller: 404, as an unknown name.
"""

from __future__ import annotations

import fnmatch
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db.models import Count, Sum
from django.db.models.functions import Length
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.http.multipartparser import MultiPartParserError

from core.auth import User
from core.errors import TooLarge, ValidationFailed
from core.filetypes import UnsupportedType, sniff
from files.services import ACCEPTED_TYPES
from knowledge import selectors, services
from knowledge.extract import ExtractionError, extract
from knowledge.models import Chunk, Document, KnowledgeBase
from knowledge.search import MAX_TOP_K, MODES, search
from realtime import http_views as native
from realtime import protocol
from realtime.seed002_files import flag, methods_allow, params

MAX_QUERY_CHARS = 4000
MAX_INDEX_NAMES = 20
MAX_CHUNKS_PER_FILE = 1000  # include_chunks: at most this many passages of each file
PREPROCESS_MAX_CHARS = 200_000  # the text of one file streamed back, at most
PREPROCESS_PIECE = 8_000  # streamed in pieces of this many characters
# What a chunk of a base holds, as an Elasticsearch mapping would show it (``fields``).
FIELDS = {
    "id": {"type": "keyword"},
    "title": {"type": "text"},
    "content": {"type": "text"},
    "embedding": {"type": "dense_vector"},
    "path_or_url": {"type": "keyword"},
    "filename": {"type": "keyword"},
    "source_type": {"type": "keyword"},
    "position": {"type": "integer"},
    "create_time": {"type": "date"},
}


def human_size(size: int) -> str:
    """Bytes as Elasticsearch's ``_cat`` writes a store size: ``512b``, ``3.4kb``, ``1.2mb``."""
    value = float(size)
    for unit in ("b", "kb", "mb", "gb"):
        if value < 1024 or unit == "gb":
            return f"{int(value)}{unit}" if unit == "b" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}gb"  # pragma: no cover - the loop returns


def _stats(bases: list[KnowledgeBase]) -> dict[Any, dict[str, Any]]:
    """Per base: ``docs`` (its passages, an index's documents) and ``size`` (their text and
    vectors, in bytes)."""
    rows = (
        Chunk.objects.filter(base__in=bases)
        .values("base_id")
        .annotate(docs=Count("id"), chars=Sum(Length("text")))
    )
    found = {row["base_id"]: row for row in rows}
    stats = {}
    for base in bases:
        row = found.get(base.id) or {"docs": 0, "chars": 0}
        size = int(row["chars"] or 0) + int(row["docs"]) * base.embedding_dimension * 4
        stats[base.id] = {"docs": int(row["docs"]), "size": human_size(size), "size_bytes": size}
    return stats


def _index_name(request: HttpRequest, index_name: str | None) -> str:
    """The path's name, else the query string's or body's ``index_name`` (the seed lists it as a
    parameter of ``POST /api/indices/``)."""
    if index_name:
        return index_name
    name = params(request).get("index_name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("index_name is required.", details={"index_name": ["This field is required."]})
    return name


def _embedding_dim(value: Any) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        value = "x"
    try:
        dim = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed(
            "embedding_dim is a whole number.", details={"embedding_dim": ["A whole number."]}
        ) from None
    if dim < 1:
        raise ValidationFailed("embedding_dim is at least 1.", details={"embedding_dim": ["At least 1."]})
    return dim


# --- /api/indices and /api/indices/{index_name} -------------------------------------------------


def _create(user: User, name: str, dim: int | None) -> KnowledgeBase:
    return services.base_create(owner=user, name=name, embedding_dimension=dim)


def _delete(user: User, name: str) -> str:
    base = selectors.base_get_for_user(user=user, name=name)
    services.base_delete(base=base)
    return base.name


def _list(user: User, pattern: str, include_stats: bool) -> dict[str, Any]:
    bases = [
        b for b in selectors.bases_readable(user).order_by("name") if fnmatch.fnmatchcase(b.name, pattern)
    ]
    answer: dict[str, Any] = {"indices": [b.name for b in bases], "count": len(bases)}
    if include_stats:
        stats = _stats(bases)
        answer["indices_info"] = [
            {"name": b.name, "stats": {"docs": stats[b.id]["docs"], "size": stats[b.id]["size"]}}
            for b in bases
        ]
    return answer


async def _do_index(request: HttpRequest, user: User, index_name: str | None) -> JsonResponse:
    if request.method == "GET" and not index_name:
        query = params(request)
        pattern = query.get("pattern") or "*"
        if not isinstance(pattern, str):
            raise ValidationFailed("pattern is a string.", details={"pattern": ["A string."]})
        include_stats = flag(query.get("include_stats"), "include_stats", False)
        return JsonResponse(await sync_to_async(_list)(user, pattern, include_stats))
    name = _index_name(request, index_name)
    if request.method == "DELETE":
        deleted = await sync_to_async(_delete)(user, name)
        return JsonResponse({"status": "success", "message": f"Index {deleted} deleted successfully."})
    dim = _embedding_dim(params(request).get("embedding_dim"))
    base = await sync_to_async(_create)(user, name, dim)
    return JsonResponse(
        {
            "status": "success",
            "message": f"Index {base.name} created successfully.",
            "embedding_dim": base.embedding_dimension,
            "index_name": base.name,
            "embedding_model": base.embedding_model,
        }
    )


@native.authenticated_endpoint
async def indices(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``GET /api/indices`` (``pattern``, ``include_stats``); ``POST``/``DELETE /api/indices/``
    with ``index_name`` as a parameter."""
    methods_allow(request, "GET", "POST", "DELETE")
    return await _do_index(request, user, None)


@native.authenticated_endpoint
async def index(request: HttpRequest, index_name: str, *, user: User) -> HttpResponseBase:
    """``POST /api/indices/{index_name}`` (``embedding_dim``) creates; ``DELETE`` deletes."""
    methods_allow(request, "POST", "DELETE")
    return await _do_index(request, user, index_name)


# --- /api/indices/{index_name}/info --------------------------------------------------------------


def _chunk_item(chunk: Chunk, created: str) -> dict[str, Any]:
    return {"id": str(chunk.pk), "title": chunk.title, "content": chunk.text, "create_time": created}


def _info(user: User, name: str, include_files: bool, include_chunks: bool) -> dict[str, Any]:
    started = time.perf_counter()
    base = selectors.base_get_for_user(user=user, name=name)
    stats = _stats([base])[base.id]
    answer: dict[str, Any] = {
        "base_info": {
            "docs": stats["docs"],
            "size": stats["size"],
            "name": base.name,
            "documents": Document.objects.filter(base=base).count(),
            "embedding_model": base.embedding_model,
            "embedding_dim": base.embedding_dimension,
            "chunk_strategy": base.chunk_strategy,
            "create_time": base.created_at.isoformat(),
            "update_time": base.updated_at.isoformat(),
        },
        "fields": FIELDS,
    }
    if include_files:
        files = []
        for document in selectors.documents_of_base(base).order_by("created_at"):
            metadata = document.metadata or {}
            created = document.created_at.isoformat()
            item: dict[str, Any] = {
                "path_or_url": document.source,
                "file": str(
                    metadata.get("filename")
                    or (document.stored_file.name if document.stored_file else "")
                    or document.title
                    or document.source
                ),
                "file_size": document.size,
                "create_time": created,
                "status": document.status,
                "error": document.error or None,
                "chunks_count": document.chunk_count,
            }
            if include_chunks:
                chunks = Chunk.objects.filter(document=document).order_by("position").defer("embedding")
                item["chunks"] = [_chunk_item(c, created) for c in chunks[:MAX_CHUNKS_PER_FILE]]
            files.append(item)
        answer["files"] = files
    # Nexus keeps no search statistics per base: what reading this base's figures took, and
    # how many passages a match-all query would hit.
    answer["search_performance"] = {
        "query_time": round((time.perf_counter() - started) * 1000, 3),
        "hits": stats["docs"],
    }
    return answer


@native.authenticated_endpoint
async def index_info(request: HttpRequest, index_name: str, *, user: User) -> HttpResponseBase:
    """``GET /api/indices/{index_name}/info`` (``include_files`` default true, ``include_chunks``
    default false)."""
    methods_allow(request, "GET")
    query = params(request)
    include_files = flag(query.get("include_files"), "include_files", True)
    include_chunks = flag(query.get("include_chunks"), "include_chunks", False)
    return JsonResponse(await sync_to_async(_info)(user, index_name, include_files, include_chunks))


# --- DELETE /api/indices/{index_name}/documents ---------------------------------------------------


def _delete_documents(user: User, name: str, source: str) -> int:
    base = selectors.base_get_for_user(user=user, name=name)
    passages = Chunk.objects.filter(base=base, document__source=source).count()
    documents = services.documents_delete_by_source(base=base, source=source)
    # an index counts passages; a document not yet cut into any still counts as one
    return max(passages, documents)


@native.authenticated_endpoint
async def index_documents(request: HttpRequest, index_name: str, *, user: User) -> HttpResponseBase:
    """``DELETE /api/indices/{index_name}/documents`` ``{path_or_url}`` -> ``{status, deleted_count}``.
    (``POST`` on this path indexes documents: the ingestion face's.)"""
    methods_allow(request, "DELETE")
    source = params(request).get("path_or_url")
    if not isinstance(source, str) or not source.strip():
        raise ValidationFailed(
            "path_or_url is required.", details={"path_or_url": ["This field is required."]}
        )
    deleted = await sync_to_async(_delete_documents)(user, index_name, source)
    return JsonResponse({"status": "success", "deleted_count": deleted})


# --- POST /api/indices/search/{mode} -------------------------------------------------------------


def _search_input(body: dict[str, Any], mode: str) -> tuple[str, list[str], int, float]:
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValidationFailed("query is required.", details={"query": ["A non-empty string."]})
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationFailed(
            f"query is at most {MAX_QUERY_CHARS} characters.", details={"query": ["Too long."]}
        )
    names = body.get("index_names")
    if isinstance(names, str):
        names = [names]
    if (
        not isinstance(names, list)
        or not names
        or len(names) > MAX_INDEX_NAMES
        or not all(isinstance(n, str) and n for n in names)
    ):
        raise ValidationFailed(
            "index_names is a list of index names.",
            details={"index_names": [f"From 1 to {MAX_INDEX_NAMES} names."]},
        )
    top_k = body.get("top_k", 5)
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
        raise ValidationFailed(
            f"top_k is a whole number from 1 to {MAX_TOP_K}.", details={"top_k": ["Out of range."]}
        )
    weight = body.get("weight_accurate", 0.5) if mode == "hybrid" else 0.5
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
        raise ValidationFailed(
            "weight_accurate is a number from 0 to 1.", details={"weight_accurate": ["From 0 to 1."]}
        )
    return query, names, top_k, float(weight)


@native.authenticated_endpoint
async def index_search(request: HttpRequest, mode: str, *, user: User) -> HttpResponseBase:
    """``POST /api/indices/search/accurate|semantic|hybrid`` ``{query, index_names, top_k,
    weight_accurate}`` -> ``{results, total, query_time_ms}``."""
    methods_allow(request, "POST")
    if mode not in MODES:
        raise ValidationFailed(f"The search modes are {', '.join(MODES)}.")
    query, names, top_k, weight = _search_input(native._json_body(request), mode)
    started = time.perf_counter()
    bases = await sync_to_async(selectors.bases_by_names)(user=user, names=names)
    hits = await search(bases, query, mode=mode, top_k=top_k, weight_accurate=weight)  # type: ignore[arg-type]
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    results = []
    for hit in hits:
        item: dict[str, Any] = {
            "id": str(hit.chunk_id),
            "title": hit.title,
            "content": hit.text,
            "score": hit.score,
            "index": hit.base,
            "path_or_url": hit.source,
            "filename": hit.filename,
        }
        if mode == "hybrid":
            item["score_details"] = {
                "accurate": hit.score_details.get("accurate", 0.0),
                "semantic": hit.score_details.get("semantic", 0.0),
            }
        results.append(item)
    return JsonResponse({"results": results, "total": len(results), "query_time_ms": elapsed})


# --- GET /api/indices/health ---------------------------------------------------------------------


@native.authenticated_endpoint
async def indices_health(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``GET /api/indices/health`` -> ``{status: "healthy", elasticsearch: "connected",
    indices_count}`` (the store is the database; ``indices_count``: the caller's bases)."""
    methods_allow(request, "GET")
    try:
        count = await sync_to_async(lambda: selectors.bases_readable(user).count())()
    except Exception:  # the database is down: the seed's unhealthy answer
        return JsonResponse(
            {"status": "unhealthy", "elasticsearch": "disconnected", "error": "The store is unreachable."},
            status=503,
        )
    return JsonResponse({"status": "healthy", "elasticsearch": "connected", "indices_count": count})


# --- POST /api/file/preprocess -------------------------------------------------------------------


def _preprocess_parse(request: HttpRequest) -> tuple[str, list[Any]]:
    try:
        query = request.POST.get("query") or ""
        files = request.FILES.getlist("files") or request.FILES.getlist("file")
    except RequestDataTooBig:
        raise TooLarge("The request body is too large.") from None
    except (MultiPartParserError, SuspiciousOperation) as exc:
        raise ValidationFailed(f"The upload could not be read: {exc}") from None
    return query, files


def _read_one(upload: Any) -> dict[str, Any]:
    """One file's text, or why not: the file store's limits (size, accepted types) apply."""
    name = upload.name or "file"
    if upload.size is not None and upload.size > settings.NEXUS_FILE_MAX_BYTES:
        return {
            "type": "error",
            "filename": name,
            "code": "file_too_large",
            "message": f"{name} is larger than {settings.NEXUS_FILE_MAX_BYTES} bytes.",
        }
    data = upload.read()
    if not data:
        return {"type": "error", "filename": name, "code": "validation_error", "message": f"{name} is empty."}
    try:
        content_type = sniff(data, name)
    except UnsupportedType as exc:
        content_type = ""
        reason = str(exc)
    else:
        reason = f"{content_type} is not a type Nexus reads"
    if content_type not in ACCEPTED_TYPES:
        return {
            "type": "error",
            "filename": name,
            "code": "unsupported_media_type",
            "message": f"{name}: {reason}.",
        }
    try:
        extracted = extract(data, filename=name, content_type=content_type)
    except ExtractionError as exc:
        return {
            "type": "error",
            "filename": name,
            "code": "unsupported_media_type",
            "message": f"{name}: {exc}.",
        }
    text = extracted.text
    return {
        "type": "file",
        "filename": name,
        "content_type": content_type,
        "size": len(data),
        "text": text[:PREPROCESS_MAX_CHARS],
        "chars": len(text),
        "truncated": len(text) > PREPROCESS_MAX_CHARS,
    }


def _event(payload: dict[str, Any]) -> bytes:
    return protocol.sse_event(json.dumps(payload, ensure_ascii=False))


async def _preprocess_stream(query: str, uploads: list[Any]) -> AsyncIterator[bytes]:
    yield _event({"type": "start", "query": query, "files": [u.name for u in uploads]})
    done = failed = 0
    for upload in uploads:
        result = await sync_to_async(_read_one)(upload)
        if result["type"] == "error":
            failed += 1
            yield _event(result)
            continue
        done += 1
        text = result.pop("text")
        yield _event({**result, "type": "file_start"})
        for at in range(0, len(text), PREPROCESS_PIECE):
            yield _event(
                {
                    "type": "content",
                    "filename": result["filename"],
                    "content": text[at : at + PREPROCESS_PIECE],
                }
            )
        yield _event({**result, "type": "file_end"})
    yield _event({"type": "complete", "processed": done, "failed": failed})


@native.authenticated_endpoint
async def file_preprocess(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /api/file/preprocess`` multipart ``query``, ``files`` -> SSE: each file's text
    (``file_start``, ``content`` pieces, ``file_end``, or ``error``), then ``complete``."""
    methods_allow(request, "POST")
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise ValidationFailed("Send the files as multipart/form-data (fields: query, files).")
    limit = (
        settings.NEXUS_FILE_MAX_BYTES * settings.NEXUS_FILE_MAX_PER_UPLOAD
        + settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    )
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > limit:
        raise TooLarge(f"The upload is larger than {limit} bytes.")
    query, uploads = await sync_to_async(_preprocess_parse)(request)
    if len(query) > MAX_QUERY_CHARS:
        raise ValidationFailed(
            f"query is at most {MAX_QUERY_CHARS} characters.", details={"query": ["Too long."]}
        )
    if not uploads:
        raise ValidationFailed("No files: send them in the files field.", details={"files": ["Required."]})
    if len(uploads) > settings.NEXUS_FILE_MAX_PER_UPLOAD:
        raise ValidationFailed(
            f"At most {settings.NEXUS_FILE_MAX_PER_UPLOAD} files at once.", details={"files": ["Too many."]}
        )
    return native._sse_response(_preprocess_stream(query, uploads))
