"""Writes of the file store (docs/files.md): store an upload, delete a file, sign a URL to one.

Every upload passes the same checks, in this order, whichever path it came by (the native
``/api/files/``, seed 002's ``/api/file/storage``, the admin):

1. size: at most ``NEXUS_FILE_MAX_BYTES`` (413 ``file_too_large``);
2. type, read from the bytes (``core.filetypes.sniff``): a document or an image Nexus reads
   (415 ``unsupported_media_type``); the client's name and Content-Type are never trusted;
3. one copy: the same bytes already in the owner's folder are that file (no second copy, no quota);
4. quota: the owner's files together at most ``NEXUS_FILE_QUOTA_BYTES`` (403 ``quota_exceeded``:
   waiting does not help, deleting files does).

A user's uploads are serialized (a row lock on the user) so two concurrent ones cannot both pass
the quota. The bytes go to the default storage under a name Nexus makes (no user input in storage
keys); the name the user gave is kept on the row, made unique in its folder.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.core.files.base import ContentFile, File
from django.db import transaction

from core.errors import NexusError, NotFound, TooLarge, ValidationFailed
from core.filetypes import DOCUMENT_TYPES, IMAGE_TYPES, UnsupportedType, sniff
from files.models import StoredFile
from files.selectors import file_usage_bytes

logger = logging.getLogger("nexus.files")

ACCEPTED_TYPES = DOCUMENT_TYPES | IMAGE_TYPES
EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "text/html": ".html",
    "text/markdown": ".md",
    "text/plain": ".txt",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
}
MAX_NAME_CHARS = 200
MAX_FOLDER_CHARS = 255
SIGNED_URL_SALT = "nexus.files.signed-url"


class FileTooLarge(TooLarge):
    code = "file_too_large"


class UnsupportedFileType(NexusError):
    code = "unsupported_media_type"
    http_status = 415


class QuotaExceeded(NexusError):
    code = "quota_exceeded"
    http_status = 403


class LinkExpired(NexusError):
    code = "link_expired"
    http_status = 410


def _printable(text: str) -> bool:
    return all(ch.isprintable() for ch in text)


def file_name_clean(raw: Any) -> str:
    """The last path component of a client's file name, printable, at most 200 characters (the
    extension kept when it is shortened). ValidationFailed when nothing usable is left."""
    if not isinstance(raw, str):
        raise ValidationFailed("A file name is a string.", details={"name": ["A string."]})
    name = raw.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or name in (".", "..") or not _printable(name):
        raise ValidationFailed("The file has no usable name.", details={"name": ["A printable file name."]})
    if len(name) > MAX_NAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = f"{stem[: MAX_NAME_CHARS - len(ext) - 1]}.{ext}"
        else:
            name = name[:MAX_NAME_CHARS]
    return name


def folder_clean(raw: Any) -> str:
    """A folder as ``a/b`` (no leading, trailing or doubled slashes); "" is the top."""
    if raw is None:
        return ""
    if not isinstance(raw, str):
        raise ValidationFailed("folder is a string.", details={"folder": ["A string."]})
    parts = [part.strip() for part in raw.replace("\\", "/").split("/") if part.strip()]
    if any(part in (".", "..") or not _printable(part) for part in parts):
        raise ValidationFailed("Invalid folder.", details={"folder": ["Printable names, no . or .."]})
    folder = "/".join(parts)
    if len(folder) > MAX_FOLDER_CHARS:
        raise ValidationFailed(
            "The folder name is too long.", details={"folder": [f"At most {MAX_FOLDER_CHARS} characters."]}
        )
    return folder


def _unique_name(*, owner: Any, folder: str, name: str) -> str:
    taken = set(
        StoredFile.objects.filter(
            owner=owner, folder=folder, name__startswith=name.rpartition(".")[0] or name
        )
        .values_list("name", flat=True)
        .iterator()
    )
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    for n in range(2, 10_000):
        candidate = f"{stem} ({n}){dot}{ext}"
        if candidate not in taken:
            return candidate
    return f"{stem} ({uuid.uuid4().hex[:8]}){dot}{ext}"


def _read(content: File | bytes) -> bytes:
    if isinstance(content, bytes):
        return content
    if content.size is not None and content.size > settings.NEXUS_FILE_MAX_BYTES:
        raise _too_large(content.size)
    content.seek(0)
    data = content.read(settings.NEXUS_FILE_MAX_BYTES + 1)
    return data if isinstance(data, bytes) else data.encode()


def _too_large(size: int) -> FileTooLarge:
    limit = settings.NEXUS_FILE_MAX_BYTES
    return FileTooLarge(
        f"The file is larger than the {limit}-byte limit.", details={"size": size, "max_bytes": limit}
    )


def file_store(*, owner: Any, name: str, content: File | bytes, folder: str = "") -> tuple[StoredFile, bool]:
    """Store ``content`` for ``owner`` as ``folder/name``: (the file, whether it is new). The same
    bytes already in that folder are that file (``False``). Raises FileTooLarge,
    UnsupportedFileType, QuotaExceeded, ValidationFailed (names)."""
    name = file_name_clean(name)
    folder = folder_clean(folder)
    data = _read(content)
    if len(data) > settings.NEXUS_FILE_MAX_BYTES:
        raise _too_large(len(data))
    if not data:
        raise ValidationFailed(f"{name} is empty.", details={"file": ["The file is empty."]})
    try:
        content_type = sniff(data, name)
    except UnsupportedType as exc:
        raise UnsupportedFileType(f"{name}: {exc}; Nexus stores documents and images.") from None
    if content_type not in ACCEPTED_TYPES:
        raise UnsupportedFileType(f"{name}: {content_type} is not a type Nexus stores.")
    checksum = hashlib.sha256(data).hexdigest()
    saved: list[str] = []
    try:
        with transaction.atomic():
            # one upload of a user at a time: the quota's sum and the insert see the same files
            get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
            existing = StoredFile.objects.filter(owner=owner, folder=folder, checksum=checksum).first()
            if existing is not None:
                return existing, False
            used = file_usage_bytes(user=owner)
            quota = settings.NEXUS_FILE_QUOTA_BYTES
            if used + len(data) > quota:
                raise QuotaExceeded(
                    f"Storing {name} would pass your storage quota of {quota} bytes "
                    f"({used} used): delete files first.",
                    details={"used_bytes": used, "quota_bytes": quota, "size": len(data)},
                )
            stored = StoredFile(
                owner=owner,
                name=_unique_name(owner=owner, folder=folder, name=name),
                folder=folder,
                content_type=content_type,
                size=len(data),
                checksum=checksum,
            )
            stored.blob.save(
                f"{uuid.uuid4().hex}{EXTENSIONS.get(content_type, '')}", ContentFile(data), save=False
            )
            if stored.blob.name:
                saved.append(stored.blob.name)
            stored.save(force_insert=True)
    except BaseException:
        storage = StoredFile._meta.get_field("blob").storage
        for blob_name in saved:  # the row never came to be: neither does its blob
            storage.delete(blob_name)
        raise
    logger.info("file stored: %s bytes, %s (user %s)", len(data), content_type, owner.pk)
    return stored, True


def file_delete(*, file: StoredFile) -> None:
    """Delete the file's row, then its bytes once the deletion is committed (``blob_forget``)."""
    file.delete()


def blob_forget(*, file: StoredFile) -> None:
    """Delete a deleted row's bytes once the deletion commits. Connected to ``post_delete``
    (files/apps.py): a file deleted any way (this service, the admin, a user deleted with all they
    own) leaves no bytes behind; a deletion that rolls back keeps them."""
    storage, blob_name = file.blob.storage, file.blob.name
    if blob_name:
        transaction.on_commit(lambda: storage.delete(blob_name))


# --- signed URLs (seed 002's expiring URLs, served by Nexus) ------------------------------------


@dataclass(frozen=True, slots=True)
class SignedFile:
    file: StoredFile
    download: bool


def file_url_token(*, file: StoredFile, expires: int, download: bool = False) -> tuple[str, int]:
    """(a signed token naming ``file``, its expiry as epoch seconds). ``expires``: seconds,
    clamped to [1, NEXUS_FILE_URL_MAX_SECONDS]. ``download``: served as an attachment."""
    seconds = max(1, min(int(expires), settings.NEXUS_FILE_URL_MAX_SECONDS))
    until = int(time.time()) + seconds
    token = signing.dumps({"f": file.pk.hex, "e": until, "d": int(download)}, salt=SIGNED_URL_SALT)
    return token, until


def file_from_token(token: str) -> SignedFile:
    """The file a signed token names: NotFound (bad token, deleted file), LinkExpired."""
    try:
        payload = signing.loads(token, salt=SIGNED_URL_SALT)
        file_id, until, download = uuid.UUID(payload["f"]), int(payload["e"]), bool(payload["d"])
    except (signing.BadSignature, KeyError, TypeError, ValueError):
        raise NotFound("File not found.") from None
    if until < time.time():
        raise LinkExpired("This link has expired: ask for a new one.")
    file = StoredFile.objects.filter(pk=file_id).first()
    if file is None:
        raise NotFound("File not found.")
    return SignedFile(file=file, download=download)
