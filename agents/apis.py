"""Agents over REST (seeds 000, 001). Thin: selectors read, services write and decide who may."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents import mcp, selectors, services
from agents.provider_config import provider_statuses
from agents.serializers import (
    AgentCreateSerializer,
    AgentFilterSerializer,
    AgentSerializer,
    AgentWriteSerializer,
    McpCredentialSerializer,
    McpRefreshSerializer,
    McpServerSerializer,
    McpServerWriteSerializer,
    ProviderStatusSerializer,
)
from agents.tools.mcp import describe_failure, mcp_refresh_tools_blocking
from core.pagination import PageNumberPagination
from core.throttles import AgentOpsThrottle, ProvidersThrottle

TAGS = ["agents"]


class AgentListView(APIView):
    pagination_class = PageNumberPagination
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=TAGS,
        summary="List agents",
        description="Your agents and the shared ones (staff: all), by name.",
        parameters=[AgentFilterSerializer],
        responses={200: AgentSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        filters = AgentFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        agents = selectors.agent_list(user=request.user, filters=filters.validated_data)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(agents, request, view=self)
        data = AgentSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)

    @extend_schema(
        tags=TAGS,
        summary="Create an agent",
        request=AgentCreateSerializer,
        responses={201: AgentSerializer},
    )
    def post(self, request: Request) -> Response:
        agent = agent_create_from_request(request)
        return Response(AgentSerializer(agent, context={"request": request}).data, status=201)


def agent_create_from_request(request: Request) -> Any:
    """A create request's body, checked (``AgentCreateSerializer``), made into the caller's agent;
    the native and seed 000's create answer it each in their own shape."""
    serializer = AgentCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    return services.agent_create_for_user(
        user=request.user,
        shared=serializer.validated_data.get("shared", False),
        **serializer.to_service_fields(),
    )


class AgentDetailView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(tags=TAGS, summary="Get an agent", responses={200: AgentSerializer})
    def get(self, request: Request, agent_id: Any) -> Response:
        agent = selectors.agent_get_for_user(user=request.user, agent_id=agent_id)
        return Response(AgentSerializer(agent, context={"request": request}).data)

    @extend_schema(
        tags=TAGS,
        summary="Replace an agent",
        description="Owners change their agents; shared agents are changed by staff only.",
        request=AgentWriteSerializer,
        responses={200: AgentSerializer},
    )
    def put(self, request: Request, agent_id: Any) -> Response:
        return self._update(request, agent_id, partial=False)

    @extend_schema(
        tags=TAGS,
        summary="Change an agent",
        description="Owners change their agents; shared agents are changed by staff only.",
        request=AgentWriteSerializer(partial=True),
        responses={200: AgentSerializer},
    )
    def patch(self, request: Request, agent_id: Any) -> Response:
        return self._update(request, agent_id, partial=True)

    def _update(self, request: Request, agent_id: Any, *, partial: bool) -> Response:
        agent = selectors.agent_get_for_user(user=request.user, agent_id=agent_id)
        serializer = AgentWriteSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        agent = services.agent_update_for_user(
            user=request.user, agent=agent, **serializer.to_service_fields()
        )
        return Response(AgentSerializer(agent, context={"request": request}).data)

    @extend_schema(
        tags=TAGS,
        summary="Delete an agent",
        description="Refused with 409 while the agent has messages (pause it instead).",
        responses={
            204: OpenApiResponse(description="Deleted."),
            409: OpenApiResponse(description="The agent has messages."),
        },
    )
    def delete(self, request: Request, agent_id: Any) -> Response:
        agent = selectors.agent_get_for_user(user=request.user, agent_id=agent_id)
        services.agent_delete_for_user(user=request.user, agent=agent)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ProviderListView(APIView):
    throttle_classes = (ProvidersThrottle,)

    @extend_schema(
        tags=["providers"],
        summary="Providers, whether each is reachable, and their models",
        responses={200: ProviderStatusSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        statuses = async_to_sync(provider_statuses)()
        return Response(ProviderStatusSerializer(statuses, many=True).data)


# --- MCP servers (docs/mcp.md) ------------------------------------------------------------------

MCP_TAGS = ["mcp"]


def _mcp_server_data(server: Any, user: Any) -> dict[str, Any]:
    mine = getattr(user, "is_staff", False) or (server.owner_id is not None and server.owner_id == user.pk)
    return McpServerSerializer(
        {
            "id": server.pk,
            "name": server.name,
            "description": server.description,
            "owner_id": server.owner_id,
            "shared": server.owner_id is None,
            "transport": server.transport,
            "url": (server.url or None) if mine else None,
            "enabled": server.enabled,
            "per_user_credentials": server.per_user_credentials,
            "has_my_credential": mcp.mcp_user_has_credential(user=user, server=server),
            "tools": [
                {**tool, "function_name": mcp.mcp_function_name(server.name, tool["name"])}
                for tool in server.tools_cache or []
            ],
            "tools_fetched_at": server.tools_fetched_at,
            "last_error": server.last_error if mine else None,
        }
    ).data


class McpServerListView(APIView):
    pagination_class = PageNumberPagination
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=MCP_TAGS,
        summary="List MCP servers",
        description="The MCP servers your agents may list tools of: the operator's and your own "
        "(staff: all), with their cached tool lists. Servers are registered in the admin.",
        responses={200: McpServerSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        servers = mcp.mcp_server_queryset_for_user(request.user)
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(servers, request, view=self)
        return paginator.get_paginated_response([_mcp_server_data(s, request.user) for s in page])

    @extend_schema(
        tags=MCP_TAGS,
        summary="Register an MCP server",
        description="Your own Streamable HTTP server, where the operator allows it "
        "(NEXUS_MCP_USER_SERVERS; 403 otherwise), or a shared one (staff). Its tool list is fetched "
        "by POST .../refresh/ or by the first run that needs it.",
        request=McpServerWriteSerializer,
        responses={
            201: McpServerSerializer,
            403: OpenApiResponse(description="Not allowed (NEXUS_MCP_USER_SERVERS, shared)."),
            409: OpenApiResponse(description="You have a server of this name already."),
        },
    )
    def post(self, request: Request) -> Response:
        serializer = McpServerWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        server = mcp.mcp_server_create_for_user(
            user=request.user, shared=fields.pop("shared", False), **fields
        )
        return Response(_mcp_server_data(server, request.user), status=201)


class McpServerDetailView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(tags=MCP_TAGS, summary="Get an MCP server", responses={200: McpServerSerializer})
    def get(self, request: Request, server_id: Any) -> Response:
        server = mcp.mcp_server_get_for_user(user=request.user, server_id=server_id)
        return Response(_mcp_server_data(server, request.user))

    @extend_schema(
        tags=MCP_TAGS,
        summary="Change an MCP server",
        description="Your own (staff: any). A changed URL drops the cached tool list.",
        request=McpServerWriteSerializer(partial=True),
        responses={
            200: McpServerSerializer,
            403: OpenApiResponse(description="Not yours."),
            409: OpenApiResponse(description="Another of your servers has this name."),
        },
    )
    def patch(self, request: Request, server_id: Any) -> Response:
        server = mcp.mcp_server_get_for_user(user=request.user, server_id=server_id)
        serializer = McpServerWriteSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        fields.pop("shared", None)  # who owns a server does not change
        server = mcp.mcp_server_update_for_user(user=request.user, server=server, **fields)
        return Response(_mcp_server_data(server, request.user))

    @extend_schema(
        tags=MCP_TAGS,
        summary="Delete an MCP server",
        responses={
            204: OpenApiResponse(description="Deleted."),
            403: OpenApiResponse(description="Not yours."),
        },
    )
    def delete(self, request: Request, server_id: Any) -> Response:
        server = mcp.mcp_server_get_for_user(user=request.user, server_id=server_id)
        mcp.mcp_server_delete_for_user(user=request.user, server=server)
        return Response(status=status.HTTP_204_NO_CONTENT)


class McpRefreshView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=MCP_TAGS,
        summary="Fetch an MCP server's tool list now",
        description="Connects (under the egress policy), lists the tools and caches them; "
        "ok false with the reason when it cannot (the reason only for your own servers; staff: all).",
        request=None,
        responses={200: McpRefreshSerializer},
    )
    def post(self, request: Request, server_id: Any) -> Response:
        server = mcp.mcp_server_get_for_user(user=request.user, server_id=server_id)
        error = ""
        try:
            mcp_refresh_tools_blocking(server, user_id=request.user.pk)
        except Exception as exc:
            mine = mcp.mcp_server_can_edit(user=request.user, server=server)
            error = describe_failure(exc) if mine else "The MCP server could not be reached."
        server.refresh_from_db()
        data = {"ok": not error, "error": error, "server": _mcp_server_data(server, request.user)}
        return Response(McpRefreshSerializer(data).data)


class McpCredentialView(APIView):
    throttle_classes = (AgentOpsThrottle,)

    @extend_schema(
        tags=MCP_TAGS,
        summary="Set your own credential for an MCP server",
        description="For a server whose calls carry each user's own credential (409 otherwise). "
        "Stored encrypted; never shown again.",
        request=McpCredentialSerializer,
        responses={
            204: OpenApiResponse(description="Stored."),
            409: OpenApiResponse(description="Not per-user."),
        },
    )
    def put(self, request: Request, server_id: Any) -> Response:
        server = mcp.mcp_server_get_for_user(user=request.user, server_id=server_id)
        serializer = McpCredentialSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        mcp.mcp_user_credential_set_for_user(
            user=request.user, server=server, value=serializer.validated_data["credential"]
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        tags=MCP_TAGS,
        summary="Remove your own credential for an MCP server",
        responses={
            204: OpenApiResponse(description="Removed."),
            409: OpenApiResponse(description="Not per-user."),
        },
    )
    def delete(self, request: Request, server_id: Any) -> Response:
        server = mcp.mcp_server_get_for_user(user=request.user, server_id=server_id)
        mcp.mcp_user_credential_set_for_user(user=request.user, server=server, value=None)
        return Response(status=status.HTTP_204_NO_CONTENT)
