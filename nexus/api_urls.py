"""REST API routes (SPEC section 3). The realtime endpoints (invoke, stop, SSE) are in realtime/http_urls.py.

The last route answers every other ``/api/`` path with the JSON error shape (404), so a client of
the API never gets Django's HTML page.
"""

from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from agents import apis as agent_apis
from agents import apis_seed000
from conversations import apis as conversation_apis
from core import apis as key_apis
from core.exceptions import api_not_found
from files import apis as file_apis
from nexus import auth_apis
from realtime.stats_api import StatsView

urlpatterns = [
    # auth (seed 001 paths have no trailing slash; both forms work)
    re_path(r"^auth/login/?$", auth_apis.LoginView.as_view(), name="auth-login"),
    re_path(r"^auth/refresh/?$", auth_apis.RefreshView.as_view(), name="auth-refresh"),
    re_path(r"^auth/verify/?$", auth_apis.VerifyView.as_view(), name="auth-verify"),
    re_path(r"^auth/ws-ticket/?$", auth_apis.WsTicketView.as_view(), name="auth-ws-ticket"),
    re_path(r"^auth/logout/?$", auth_apis.LogoutView.as_view(), name="auth-logout"),
    # personal API keys (docs/v1.md)
    path("keys/", key_apis.ApiKeyListView.as_view(), name="apikey-list"),
    path("keys/<uuid:key_id>/", key_apis.ApiKeyDetailView.as_view(), name="apikey-detail"),
    # agents and providers
    path("agents/", agent_apis.AgentListView.as_view(), name="agent-list"),
    # seed 000: the exact no-slash path is its bare-array dialect (docs/dialects.md)
    path("agents", apis_seed000.Seed000AgentsView.as_view(), name="seed000-agents"),
    path("agents/<uuid:agent_id>/", agent_apis.AgentDetailView.as_view(), name="agent-detail"),
    path("agents/<uuid:agent_id>/status/", conversation_apis.AgentStatusView.as_view(), name="agent-status"),
    path("providers/", agent_apis.ProviderListView.as_view(), name="provider-list"),
    # MCP tool servers (docs/mcp.md): registered in the admin; users read them and set their own credential
    path("mcp/servers/", agent_apis.McpServerListView.as_view(), name="mcp-server-list"),
    path("mcp/servers/<uuid:server_id>/", agent_apis.McpServerDetailView.as_view(), name="mcp-server-detail"),
    path(
        "mcp/servers/<uuid:server_id>/refresh/",
        agent_apis.McpRefreshView.as_view(),
        name="mcp-server-refresh",
    ),
    path(
        "mcp/servers/<uuid:server_id>/credential/",
        agent_apis.McpCredentialView.as_view(),
        name="mcp-server-credential",
    ),
    # conversations and messages
    path("conversations/", conversation_apis.ConversationListView.as_view(), name="conversation-list"),
    path(
        "conversations/<uuid:conversation_id>/",
        conversation_apis.ConversationDetailView.as_view(),
        name="conversation-detail",
    ),
    path(
        "conversations/<uuid:conversation_id>/agent/",
        conversation_apis.ConversationAgentView.as_view(),
        name="conversation-agent",
    ),
    path(
        "conversations/<uuid:conversation_id>/generate-title/",
        conversation_apis.ConversationTitleView.as_view(),
        name="conversation-generate-title",
    ),
    path(
        "conversations/<uuid:conversation_id>/export/",
        conversation_apis.ConversationExportView.as_view(),
        name="conversation-export",
    ),
    path(
        "messages/<uuid:message_id>/feedback/",
        conversation_apis.MessageFeedbackView.as_view(),
        name="message-feedback",
    ),
    # files (docs/files.md)
    path("files/", file_apis.FileListView.as_view(), name="file-list"),
    path("files/signed/<str:token>", file_apis.file_signed, name="file-signed"),
    path("files/<uuid:file_id>/", file_apis.FileDetailView.as_view(), name="file-detail"),
    path("files/<uuid:file_id>/download/", file_apis.FileDownloadView.as_view(), name="file-download"),
    # knowledge bases (docs/api.md "Knowledge")
    path("knowledge/", include("knowledge.urls")),
    # operations
    path("stats/", StatsView.as_view(), name="stats"),
    # OpenAPI 3 and its browsable docs
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its start-up script from ?script= (no inline script) and Swagger UI's
    # files from drf-spectacular-sidecar's static files: it works offline.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    # everything else under /api/: the JSON 404
    re_path(r"^.*$", api_not_found, name="api-not-found"),
]
