"""Personal API keys (SPEC section 11): a user's long-lived credential for ``/v1`` and the API.

A key is ``nx-<prefix>.<secret>``. Only the prefix (to find the row and to show in lists) and the
SHA-256 of the whole key are stored; the key itself is shown once, when it is made
(``core.apikeys``).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, help_text="Shown in lists; finds the key.")
    secret_hash = models.CharField(max_length=64, help_text="SHA-256 (hex) of the whole key.")
    scopes = models.JSONField(default=list, help_text='e.g. ["v1"] or ["v1", "api"].')
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["user", "created_at"], name="apikey_user_created")]

    def __str__(self) -> str:
        return f"{self.name} (nx-{self.prefix}...)"
