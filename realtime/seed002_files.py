"""Seed 002's file storage (docs/dialects.md "Seed 002: files"): ``/api/file/storage`` (upload
several files into a folder, list), ``/api/file/storage/{object_name}`` (a signed URL, delete) and
``/api/file/storage/batch-urls``, in the seed's own shapes (no envelope), over the file store's
services (``files.services``): the same size, type and quota checks as ``/api/files/``.

An ``object_name`` is ``folder/name`` (the name made unique in its folder). URLs are signed,
expiring links served by Nexus itself (``/api/files/signed/{token}``), whatever the storage
backend. Errors answer in Nexus's one error shape ``{detail, code, timestamp}`` (the seed's
FastAPI answers ``{detail}``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.http.multipartparser import MultiPartParserError

from core.auth import User
from core.errors import NexusError, NotFound, TooLarge, ValidationFailed
from core.exceptions import error_body
from files import selectors, services
from files.apis import expires_parse, signed_url
from files.models import StoredFile
from realtime import http_views as native

DEFAULT_FOLDER = "attachments"  # Nexent's own default folder
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_BATCH = 100
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def methods_allow(request: HttpRequest, *allowed: str) -> None:
    if request.method not in allowed:
        raise _MethodNotAllowed(f"Use {' or '.join(allowed)}.")


class _MethodNotAllowed(NexusError):
    code = "method_not_allowed"
    http_status = 405


def params(request: HttpRequest) -> dict[str, Any]:
    """A GET's parameters: the query string, over a JSON body if the client sent one (the seed
    writes its GET parameters as a "request body")."""
    body = native._json_body(request) if request.body else {}
    return {**body, **request.GET.dict()}


def flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValidationFailed(f"{name} is true or false.", details={name: ["true or false."]})


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat()


# --- POST /api/file/storage: upload -----------------------------------------------------------


def _parse_upload(request: HttpRequest) -> tuple[str, list[Any]]:
    try:
        folder = request.POST.get("folder")
        files = request.FILES.getlist("files") or request.FILES.getlist("file")
    except RequestDataTooBig:
        raise TooLarge("The request body is too large.") from None
    except (MultiPartParserError, SuspiciousOperation) as exc:
        raise ValidationFailed(f"The upload could not be read: {exc}") from None
    return (DEFAULT_FOLDER if folder is None else folder), files


async def _upload(request: HttpRequest, user: User) -> JsonResponse:
    content_type = request.content_type or ""
    if not content_type.startswith("multipart/form-data"):
        raise ValidationFailed("Send the files as multipart/form-data (fields: files, folder).")
    limit = (
        settings.NEXUS_FILE_MAX_BYTES * settings.NEXUS_FILE_MAX_PER_UPLOAD
        + settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    )
    length = request.META.get("CONTENT_LENGTH") or "0"
    if length.isdigit() and int(length) > limit:
        raise TooLarge(f"The upload is larger than {limit} bytes.")
    folder, uploads = await sync_to_async(_parse_upload)(request)
    if not uploads:
        raise ValidationFailed("No files: send them in the files field.", details={"files": ["Required."]})
    if len(uploads) > settings.NEXUS_FILE_MAX_PER_UPLOAD:
        raise ValidationFailed(
            f"At most {settings.NEXUS_FILE_MAX_PER_UPLOAD} files per upload.",
            details={"files": ["Too many."]},
        )
    results: list[dict[str, Any]] = []
    first_failure: NexusError | None = None
    for upload in uploads:
        try:
            file, created = await sync_to_async(services.file_store)(
                owner=user, name=upload.name or "", content=upload, folder=folder
            )
        except NexusError as exc:
            first_failure = first_failure or exc
            results.append(
                {"success": False, "file_name": upload.name, "error": exc.message, "code": exc.code}
            )
            continue
        url, _ = signed_url(request, file, expires=3600)
        results.append(
            {
                "success": True,
                "file_name": file.name,
                "url": url,
                "object_name": file.object_name,
                "file_size": file.size,
                "content_type": file.content_type,
                "duplicate": not created,
            }
        )
    stored = sum(1 for r in results if r["success"])
    failed = len(results) - stored
    body: dict[str, Any] = {
        "message": f"Stored {stored} of {len(results)} files." if failed else f"Stored {stored} files.",
        "success_count": stored,
        "failed_count": failed,
        "results": results,
    }
    if stored == 0 and first_failure is not None:  # nothing stored: the first failure's status
        body.update(error_body(first_failure.message, first_failure.code))
        return JsonResponse(body, status=first_failure.http_status)
    return JsonResponse(body)


# --- GET /api/file/storage: list ------------------------------------------------------------


def _limit(value: Any) -> int:
    if value in (None, ""):
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed("limit is a number.", details={"limit": ["A whole number."]}) from None
    if limit < 1:
        raise ValidationFailed("limit is at least 1.", details={"limit": ["At least 1."]})
    return min(limit, MAX_LIST_LIMIT)


async def _list(request: HttpRequest, user: User) -> JsonResponse:
    query = params(request)
    prefix = query.get("prefix") or ""
    if not isinstance(prefix, str):
        raise ValidationFailed("prefix is a string.", details={"prefix": ["A string."]})
    limit = _limit(query.get("limit"))
    include_urls = flag(query.get("include_urls"), "include_urls", True)
    files: list[StoredFile] = await sync_to_async(selectors.file_list_for_user)(
        user=user, prefix=prefix.lstrip("/"), limit=limit
    )
    items = []
    for file in files:
        item: dict[str, Any] = {
            "name": file.object_name,
            "size": file.size,
            "file_name": file.name,
            "content_type": file.content_type,
            "last_modified": file.created_at.isoformat(),
        }
        if include_urls:
            item["url"], _ = signed_url(request, file, expires=3600)
        items.append(item)
    return JsonResponse({"total": len(items), "files": items})


@native.authenticated_endpoint
async def storage(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /api/file/storage`` (multipart ``files``, ``folder``) and ``GET`` (``prefix``,
    ``limit``, ``include_urls``)."""
    methods_allow(request, "GET", "POST")
    if request.method == "POST":
        return await _upload(request, user)
    return await _list(request, user)


# --- /api/file/storage/{object_name} ---------------------------------------------------------


@native.authenticated_endpoint
async def storage_object(request: HttpRequest, object_name: str, *, user: User) -> HttpResponseBase:
    """``GET`` (``download``, ``expires``) -> ``{success, url, expires}``; ``DELETE`` ->
    ``{success, message}``."""
    methods_allow(request, "GET", "DELETE")
    file = await sync_to_async(selectors.file_get_by_object_name)(user=user, object_name=object_name)
    if request.method == "DELETE":
        await sync_to_async(services.file_delete)(file=file)
        return JsonResponse({"success": True, "message": f"{file.object_name} deleted."})
    query = params(request)
    download = flag(query.get("download"), "download", False)
    url, until = signed_url(request, file, expires=expires_parse(query.get("expires")), download=download)
    return JsonResponse({"success": True, "url": url, "expires": _iso(until)})


def _batch(user: User, names: list[str]) -> list[tuple[str, StoredFile | None]]:
    found: list[tuple[str, StoredFile | None]] = []
    for name in names:
        try:
            found.append((name, selectors.file_get_by_object_name(user=user, object_name=name)))
        except NotFound:
            found.append((name, None))
    return found


@native.authenticated_endpoint
async def storage_batch_urls(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``POST /api/file/storage/batch-urls`` ``{object_names, expires}`` -> ``{urls: [...]}``; a
    name that is not one of the user's files answers ``success: false`` with an ``error``."""
    methods_allow(request, "POST")
    body = native._json_body(request)
    names = body.get("object_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > MAX_BATCH:
        raise ValidationFailed(
            "object_names is a list of names.", details={"object_names": [f"At most {MAX_BATCH} strings."]}
        )
    expires = expires_parse(body.get("expires"))
    urls = []
    for name, file in await sync_to_async(_batch)(user, names):
        if file is None:
            urls.append({"object_name": name, "success": False, "url": None, "error": "File not found."})
        else:
            url, _ = signed_url(request, file, expires=expires)
            urls.append({"object_name": name, "success": True, "url": url})
    return JsonResponse({"urls": urls})
