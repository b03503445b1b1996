# Channels routes ASGI apps with Django's path(); django-stubs types path() for views alone.
# mypy: disable-error-code="arg-type"
"""WebSocket routes (SPEC section 4)."""

from django.urls import path, re_path

from realtime.consumers import AgentSocket, ConversationSocket, UnknownPathSocket
from realtime.dialects.seed001 import Seed001Socket
from realtime.knowledge_socket import KnowledgeSocket
from realtime.monitor import EventsSocket, RootMonitorSocket, StatsSocket
from realtime.seed004_socket import Seed004Socket

websocket_urlpatterns = [
    path("ws/conversations/<uuid:conversation_id>/", ConversationSocket.as_asgi()),
    re_path(r"^ws/conversations/(?P<conversation_id>[0-9a-fA-F-]{36})$", ConversationSocket.as_asgi()),
    path("ws/agent/", AgentSocket.as_asgi()),
    path("ws/agent", AgentSocket.as_asgi()),
    # seed 004: its agent socket at /api/agent (WebSocket only: HTTP /api/... is another router)
    path("api/agent", Seed004Socket.as_asgi()),
    path("api/agent/", Seed004Socket.as_asgi()),
    path("ws/knowledge/", KnowledgeSocket.as_asgi()),
    path("ws/knowledge", KnowledgeSocket.as_asgi()),
    path("ws/events/", EventsSocket.as_asgi()),
    path("ws/events", EventsSocket.as_asgi()),
    path("ws/stats/", StatsSocket.as_asgi()),
    path("ws/stats", StatsSocket.as_asgi()),
    # seed 001: /ws/{session_id}, in seed 001's frames (realtime/dialects/seed001.py)
    re_path(r"^ws/(?P<conversation_id>[0-9a-fA-F-]{36})/?$", Seed001Socket.as_asgi()),
    # seed 000: the server root, its neural-event monitor
    path("", RootMonitorSocket.as_asgi()),
    # last: any other path gets error not_found and close 4000, never an HTTP 500 at the handshake
    re_path(r"", UnknownPathSocket.as_asgi()),
]
