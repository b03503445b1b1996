"""Reads of the file store: a user sees only their own files (docs/files.md)."""

from __future__ import annotations

from typing import Any

from django.db.models import Case, F, QuerySet, Sum, Value, When
from django.db.models.functions import Concat

from core.errors import NotFound, ValidationFailed, parse_uuid
from files.models import StoredFile

MAX_OBJECT_NAME_CHARS = 512  # a folder (255) and a name (200) with their slash fit


def file_queryset_for_user(*, user: Any) -> QuerySet[StoredFile]:
    return StoredFile.objects.filter(owner=user)


def file_list_for_user(*, user: Any, prefix: str = "", limit: int | None = None) -> list[StoredFile]:
    """The user's files, newest first; ``prefix``: object names (``folder/name``) starting with it."""
    files = file_queryset_for_user(user=user)
    if "\x00" in prefix:
        raise ValidationFailed("prefix holds a NUL character.", details={"prefix": ["No NUL characters."]})
    if prefix:
        files = files.annotate(
            object_key=Case(
                When(folder="", then=F("name")),
                default=Concat(F("folder"), Value("/"), F("name")),
            )
        ).filter(object_key__startswith=prefix)
    files = files.order_by("-created_at", "name")
    return list(files[:limit] if limit is not None else files)


def file_get_for_user(*, user: Any, file_id: Any) -> StoredFile:
    """The user's file with this id; NotFound for a file of another user (it does not exist for them)."""
    pk = parse_uuid(file_id, what="File")
    file = file_queryset_for_user(user=user).filter(pk=pk).first()
    if file is None:
        raise NotFound("File not found.")
    return file


def file_get_by_object_name(*, user: Any, object_name: str) -> StoredFile:
    """The user's file named ``folder/name`` (seed 002's ``object_name``)."""
    if "\x00" in object_name or len(object_name) > MAX_OBJECT_NAME_CHARS:
        raise NotFound("No such file.")  # no stored name looks like this
    folder, _, name = object_name.strip("/").rpartition("/")
    file = file_queryset_for_user(user=user).filter(folder=folder, name=name).first()
    if file is None:
        raise NotFound(f"No file named {object_name!r}.")
    return file


def file_usage_bytes(*, user: Any) -> int:
    """Bytes the user's files take together (what the quota counts)."""
    total = file_queryset_for_user(user=user).aggregate(total=Sum("size"))["total"]
    return int(total or 0)
