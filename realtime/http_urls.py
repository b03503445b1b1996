"""Realtime HTTP endpoints: invoke, stop, and the SSE streams (SPEC section 3)."""

from django.urls import path

from realtime import http_views as views

urlpatterns = [
    path("invoke/", views.invoke, name="invoke"),
    path("invoke", views.invoke),
    path("agents/<str:agent_id>/run/", views.agent_run, name="agent-run"),
    path("conversations/<str:conversation_id>/stop/", views.conversation_stop, name="conversation-stop"),
    path(
        "conversations/<str:conversation_id>/events/", views.conversation_events, name="conversation-events"
    ),
]
