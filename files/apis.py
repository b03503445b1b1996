"""The file store over REST (docs/files.md): ``/api/files/`` (list, upload), ``/api/files/{id}/``
(get, delete), ``/api/files/{id}/download/``, and ``/api/files/signed/{token}`` (a signed,
expiring link: no credentials, the signature is the permission). A user sees only their own files.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import SuspiciousOperation
from django.http import FileResponse, HttpRequest, HttpResponseBase, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import NexusError, ValidationFailed
from core.exceptions import error_body
from files import selectors, services
from files.models import StoredFile

TAGS = ["files"]
# Shown in the browser as they are; anything else (HTML above all) is only ever downloaded.
INLINE_TYPES = frozenset(
    {"application/pdf", "text/plain", "image/png", "image/jpeg", "image/gif", "image/webp"}
)


class StoredFileSerializer(serializers.ModelSerializer):
    object_name = serializers.CharField(read_only=True)
    download_url = serializers.SerializerMethodField()

    class Meta:
        model = StoredFile
        fields = [
            "id",
            "name",
            "folder",
            "object_name",
            "content_type",
            "size",
            "checksum",
            "created_at",
            "download_url",
        ]
        read_only_fields = fields

    def get_download_url(self, file: StoredFile) -> str:
        return reverse("file-download", args=[file.pk])


class FileUploadSerializer(serializers.Serializer):
    file = serializers.FileField()
    folder = serializers.CharField(required=False, allow_blank=True, max_length=255)


def file_response(file: StoredFile, *, download: bool) -> FileResponse:
    """The file's bytes, typed by what they are. Only safe types are ever shown inline, and never
    with anything active: the bytes are a user's, served from Nexus's origin."""
    attachment = download or file.content_type not in INLINE_TYPES
    response = FileResponse(
        file.blob.open("rb"), as_attachment=attachment, filename=file.name, content_type=file.content_type
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=60"
    return response


class FileListView(APIView):
    def get_parsers(self) -> list[Any]:
        if self.request is not None and self.request.method == "POST":
            return [MultiPartParser()]
        return super().get_parsers()

    @extend_schema(
        tags=TAGS,
        summary="List your files",
        parameters=[
            OpenApiParameter("prefix", str, description="Object names (folder/name) starting with this.")
        ],
        responses={200: StoredFileSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        prefix = request.query_params.get("prefix", "")
        files = selectors.file_list_for_user(user=request.user, prefix=prefix)
        return Response(StoredFileSerializer(files, many=True).data)

    @extend_schema(
        tags=TAGS,
        summary="Upload a file",
        description="multipart/form-data: `file`, `folder`?. 201 for a new file, 200 when the same "
        "bytes are already in that folder (that file). 413 file_too_large, 415 unsupported_media_type "
        "(the type is read from the bytes), 403 quota_exceeded.",
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: StoredFileSerializer, 200: StoredFileSerializer},
    )
    def post(self, request: Request) -> Response:
        try:
            data = request.data
        except SuspiciousOperation as exc:  # e.g. more file parts than DATA_UPLOAD_MAX_NUMBER_FILES
            raise ValidationFailed(f"The upload could not be read: {exc}") from None
        form = FileUploadSerializer(data=data)
        form.is_valid(raise_exception=True)
        upload = form.validated_data["file"]
        file, created = services.file_store(
            owner=request.user,
            name=upload.name or "",
            content=upload,
            folder=form.validated_data.get("folder", ""),
        )
        return Response(StoredFileSerializer(file).data, status=201 if created else 200)


class FileDetailView(APIView):
    @extend_schema(tags=TAGS, summary="A file's facts", responses={200: StoredFileSerializer})
    def get(self, request: Request, file_id: str) -> Response:
        file = selectors.file_get_for_user(user=request.user, file_id=file_id)
        return Response(StoredFileSerializer(file).data)

    @extend_schema(tags=TAGS, summary="Delete a file (and its bytes)", responses={204: None})
    def delete(self, request: Request, file_id: str) -> Response:
        file = selectors.file_get_for_user(user=request.user, file_id=file_id)
        services.file_delete(file=file)
        return Response(status=status.HTTP_204_NO_CONTENT)


class FileDownloadView(APIView):
    @extend_schema(
        tags=TAGS,
        summary="A file's bytes",
        parameters=[OpenApiParameter("download", bool, description="As an attachment.")],
        responses={200: OpenApiResponse(description="The bytes, with the file's content type.")},
    )
    def get(self, request: Request, file_id: str) -> HttpResponseBase:
        file = selectors.file_get_for_user(user=request.user, file_id=file_id)
        download = request.query_params.get("download", "").lower() in {"1", "true", "yes"}
        return file_response(file, download=download)


@require_GET
def file_signed(request: HttpRequest, token: str) -> HttpResponseBase:
    """``GET /api/files/signed/{token}``: the bytes a signed link names, until it expires (410)."""
    try:
        signed = services.file_from_token(token)
    except NexusError as exc:
        return JsonResponse(error_body(exc.message, exc.code), status=exc.http_status)
    return file_response(signed.file, download=signed.download)


def signed_url(
    request: HttpRequest, file: StoredFile, *, expires: int, download: bool = False
) -> tuple[str, int]:
    """(an absolute signed URL to ``file`` for this request's host, its expiry in epoch seconds)."""
    token, until = services.file_url_token(file=file, expires=expires, download=download)
    return request.build_absolute_uri(reverse("file-signed", args=[token])), until


def expires_parse(value: Any, default: int = 3600) -> int:
    """Seed 002's ``expires`` (seconds): a positive whole number (clamped by the service)."""
    if value is None or value == "":
        return default
    try:
        seconds = int(value)
    except (TypeError, ValueError):
        raise ValidationFailed("expires is a number of seconds.", details={"expires": ["Seconds."]}) from None
    if seconds <= 0 or isinstance(value, bool):
        raise ValidationFailed("expires is a number of seconds.", details={"expires": ["Above 0."]})
    return seconds
