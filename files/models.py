"""Stored files (SPEC section 10): what a user uploaded, kept through Django's storage API."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class StoredFile(models.Model):
    """One uploaded file: its bytes live in the default storage, its facts here.

    ``content_type`` is what the bytes are (sniffed by ``core.filetypes``), never what the name or
    the client claimed. ``checksum`` is the SHA-256 of the bytes: the same file uploaded twice by
    one owner is one row.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="files")
    name = models.CharField(max_length=255)
    folder = models.CharField(max_length=255, blank=True, default="")
    content_type = models.CharField(max_length=128)
    size = models.BigIntegerField()
    checksum = models.CharField(max_length=64)
    blob = models.FileField(upload_to="files/%Y/%m/", max_length=512)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "folder", "checksum"], name="files_one_copy_per_folder"),
            # a file's object name (folder/name) is one file of its owner (seed 002's object_name)
            models.UniqueConstraint(fields=["owner", "folder", "name"], name="files_one_name_per_folder"),
        ]
        indexes = [models.Index(fields=["owner", "folder", "name"], name="files_owner_folder_name")]

    def __str__(self) -> str:
        return self.object_name

    @property
    def object_name(self) -> str:
        """``folder/name`` (or ``name`` at the top): how seed 002's file paths name the file."""
        return f"{self.folder}/{self.name}" if self.folder else self.name
