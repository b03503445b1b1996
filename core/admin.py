"""API keys in the admin: listed with their status, revoked by an action; never made here (a key
is shown once, to its user)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from core.apikeys import api_key_status
from core.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "shown_prefix",
        "scopes",
        "key_status",
        "created_at",
        "expires_at",
        "last_used_at",
    )
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = (
        "id",
        "user",
        "prefix",
        "secret_hash",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    fields = ("name", *readonly_fields)
    actions = ("revoke",)

    @admin.display(description="prefix")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"nx-{obj.prefix}"

    @admin.display(description="status")
    def key_status(self, obj: ApiKey) -> str:
        return api_key_status(obj)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Revoke the selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
