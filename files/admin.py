"""The file store in the admin: see and delete users' files (a deletion removes the bytes too)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from files.models import StoredFile
from files.services import file_delete


@admin.register(StoredFile)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = ("name", "folder", "owner", "content_type", "size", "created_at")
    list_filter = ("content_type",)
    search_fields = ("name", "folder", "owner__username", "checksum")
    readonly_fields = (
        "id",
        "owner",
        "name",
        "folder",
        "content_type",
        "size",
        "checksum",
        "blob",
        "created_at",
    )
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # files come in through the upload checks (size, type, quota), not a form

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        file_delete(file=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        for file in queryset:
            file_delete(file=file)
