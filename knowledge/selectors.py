"""Reads of knowledge bases and documents, and who may read them.

A base is readable by its owner only. Staff see every base in the admin, not through the API or
an agent's search: a base holds its owner's documents, and being staff is no reason to search
them. (SPEC section 10 is silent; this is the choice.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from core.errors import NotFound, parse_uuid
from knowledge.models import Document, IngestTask, KnowledgeBase


def bases_readable(user: Any) -> QuerySet[KnowledgeBase]:
    """The bases ``user`` may read and search: their own."""
    if not getattr(user, "is_authenticated", False):
        return KnowledgeBase.objects.none()
    return KnowledgeBase.objects.filter(owner=user)


def base_get_for_user(*, user: Any, name: str) -> KnowledgeBase:
    """The base ``user`` names (seed 002's ``index_name``), or NotFound."""
    base = bases_readable(user).filter(name=name).first()
    if base is None:
        raise NotFound(f"Knowledge base {name!r} not found.")
    return base


def bases_by_names(*, user: Any, names: Iterable[str]) -> list[KnowledgeBase]:
    """The named bases ``user`` may read, in the order named; NotFound names the first missing."""
    wanted = list(dict.fromkeys(names))
    found = {base.name: base for base in bases_readable(user).filter(name__in=wanted)}
    for name in wanted:
        if name not in found:
            raise NotFound(f"Knowledge base {name!r} not found.")
    return [found[name] for name in wanted]


def documents_of_base(base: KnowledgeBase) -> QuerySet[Document]:
    return Document.objects.filter(base=base).select_related("stored_file")


def document_get(*, base: KnowledgeBase, document_id: Any) -> Document:
    document = Document.objects.filter(base=base, id=parse_uuid(document_id, what="Document")).first()
    if document is None:
        raise NotFound("Document not found.")
    return document


def task_get_for_user(*, user: Any, task_id: Any) -> IngestTask:
    task_uuid: uuid.UUID = parse_uuid(task_id, what="Task")
    task = IngestTask.objects.filter(id=task_uuid, owner=user).first() if user.is_authenticated else None
    if task is None:
        raise NotFound("Task not found.")
    return task
