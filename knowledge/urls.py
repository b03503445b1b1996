"""``/api/knowledge/`` routes (knowledge/apis.py; the SSE follower is in realtime/http_urls.py)."""

from django.urls import path

from knowledge import apis

urlpatterns = [
    path("bases/", apis.BaseListView.as_view(), name="knowledge-base-list"),
    path("bases/<uuid:base_id>/", apis.BaseDetailView.as_view(), name="knowledge-base-detail"),
    path("bases/<uuid:base_id>/documents/", apis.DocumentListView.as_view(), name="knowledge-document-list"),
    path(
        "bases/<uuid:base_id>/documents/text/",
        apis.DocumentTextView.as_view(),
        name="knowledge-document-text",
    ),
    path(
        "bases/<uuid:base_id>/documents/url/", apis.DocumentUrlView.as_view(), name="knowledge-document-url"
    ),
    path(
        "bases/<uuid:base_id>/documents/<uuid:document_id>/",
        apis.DocumentDetailView.as_view(),
        name="knowledge-document-detail",
    ),
    path("search/", apis.SearchView.as_view(), name="knowledge-search"),
    path("tasks/", apis.TaskListView.as_view(), name="knowledge-task-list"),
    path("tasks/<uuid:task_id>/", apis.TaskDetailView.as_view(), name="knowledge-task-detail"),
]
