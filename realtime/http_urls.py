"""Realtime HTTP endpoints: invoke, stop, and the SSE streams (SPEC section 3)."""

from django.urls import path

from realtime import agui_views, branch_views
from realtime import http_views as views

_MESSAGE = "conversations/<str:conversation_id>/messages/<str:message_id>"

urlpatterns = [
    path("invoke/", views.invoke, name="invoke"),
    path("invoke", views.invoke),
    path("agents/<str:agent_id>/run/", views.agent_run, name="agent-run"),
    path("agui/<str:agent_id>", agui_views.agui_run, name="agui-run"),  # AG-UI 1.0 (docs/dialects.md)
    path("agui/<str:agent_id>/", agui_views.agui_run),
    path("conversations/<str:conversation_id>/stop/", views.conversation_stop, name="conversation-stop"),
    path(
        "conversations/<str:conversation_id>/events/", views.conversation_events, name="conversation-events"
    ),
    path(f"{_MESSAGE}/regenerate/", branch_views.message_regenerate_view, name="message-regenerate"),
    path(f"{_MESSAGE}/edit/", branch_views.message_edit_view, name="message-edit"),
    path(f"{_MESSAGE}/continue/", branch_views.message_continue_view, name="message-continue"),
    path(f"{_MESSAGE}/select/", branch_views.message_select_view, name="message-select"),
]
