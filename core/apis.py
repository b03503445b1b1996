"""Personal API keys over REST: ``GET/POST /api/keys/``, ``DELETE /api/keys/{id}/`` (docs/v1.md).

The key itself is in the answer to ``POST`` only. A key cannot manage keys: these endpoints take
a JWT or the session (the web page), never an API key.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.apikeys import KEY_STATUSES, SCOPES, api_key_create, api_key_describe, api_key_list, api_key_revoke
from core.throttles import AgentOpsThrottle

TAGS = ["keys"]


class ApiKeySerializer(serializers.Serializer):
    """A key as lists show it: never the key itself."""

    id = serializers.UUIDField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=SCOPES))
    status = serializers.ChoiceField(choices=KEY_STATUSES)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The key itself: shown this once, stored hashed.")


class ApiKeyListSerializer(serializers.Serializer):
    results = ApiKeySerializer(many=True)


_CREATE = inline_serializer(
    "ApiKeyCreate",
    {
        "name": serializers.CharField(max_length=100),
        "scopes": serializers.ListField(child=serializers.ChoiceField(choices=SCOPES), required=False),
        "expires_in_days": serializers.IntegerField(
            required=False, allow_null=True, min_value=1, max_value=3650
        ),
    },
)


class NotWithApiKey(BasePermission):
    message = "API keys are managed with a sign-in (JWT or the web page), not with an API key."

    def has_permission(self, request: Request, view: Any) -> bool:
        return request.auth != "api_key"


class ApiKeyListView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    def get_permissions(self) -> list[Any]:
        return [*super().get_permissions(), NotWithApiKey()]

    @extend_schema(tags=TAGS, summary="List your API keys", responses={200: ApiKeyListSerializer})
    def get(self, request: Request) -> Response:
        keys = api_key_list(user=request.user)  # type: ignore[arg-type]
        return Response({"results": [api_key_describe(k) for k in keys]})

    @extend_schema(
        tags=TAGS,
        summary="Create an API key",
        description="The answer's `key` is the only time the key is shown: it is stored hashed.",
        request=_CREATE,
        responses={201: ApiKeyCreatedSerializer},
    )
    def post(self, request: Request) -> Response:
        body = request.data if isinstance(request.data, dict) else {}
        row, key = api_key_create(
            user=request.user,  # type: ignore[arg-type]
            name=body.get("name"),
            scopes=body.get("scopes"),
            expires_in_days=body.get("expires_in_days"),
        )
        return Response({**api_key_describe(row), "key": key}, status=201)


class ApiKeyDetailView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    def get_permissions(self) -> list[Any]:
        return [*super().get_permissions(), NotWithApiKey()]

    @extend_schema(
        tags=TAGS, summary="Revoke an API key", responses={200: ApiKeySerializer, 404: OpenApiResponse()}
    )
    def delete(self, request: Request, key_id: Any) -> Response:
        row = api_key_revoke(user=request.user, key_id=key_id)  # type: ignore[arg-type]
        return Response(api_key_describe(row))
