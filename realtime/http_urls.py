"""Realtime HTTP endpoints: invoke, stop, and the SSE streams (SPEC section 3)."""

from django.http import HttpRequest, HttpResponseBase
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt

from realtime import (
    agui_views,
    branch_views,
    knowledge_views,
    seed002_files,
    seed002_indices,
    seed002_models,
    seed002_proxy,
    seed002_tasks,
)
from realtime import http_views as views
from realtime import seed002_views as seed002

_MESSAGE = "conversations/<str:conversation_id>/messages/<str:message_id>"


@csrf_exempt  # each view it hands to checks CSRF itself (authenticated_endpoint), as every endpoint here
async def _index_documents(request: HttpRequest, index_name: str) -> HttpResponseBase:
    """Seed 002's ``/api/indices/{index_name}/documents``: ``POST`` indexes documents (the
    ingestion face, realtime/seed002_tasks.py), ``DELETE`` removes them by source
    (realtime/seed002_indices.py); each answers any other method with its 405."""
    if request.method == "DELETE":
        return await seed002_indices.index_documents(request, index_name=index_name)
    return await seed002_tasks.index_documents(request, index_name=index_name)


urlpatterns = [
    path("invoke/", views.invoke, name="invoke"),
    path("invoke", views.invoke),
    path("agents/<str:agent_id>/run/", views.agent_run, name="agent-run"),
    path("agui/<str:agent_id>", agui_views.agui_run, name="agui-run"),  # AG-UI 1.0 (docs/dialects.md)
    path("agui/<str:agent_id>/", agui_views.agui_run),
    path("conversations/<str:conversation_id>/stop/", views.conversation_stop, name="conversation-stop"),
    path(
        "conversations/<str:conversation_id>/approvals/<str:tool_call_id>/",
        views.approval_decide_view,
        name="approval-decide",
    ),
    path(
        "conversations/<str:conversation_id>/events/", views.conversation_events, name="conversation-events"
    ),
    path(f"{_MESSAGE}/regenerate/", branch_views.message_regenerate_view, name="message-regenerate"),
    path(f"{_MESSAGE}/edit/", branch_views.message_edit_view, name="message-edit"),
    path(f"{_MESSAGE}/continue/", branch_views.message_continue_view, name="message-continue"),
    path(f"{_MESSAGE}/select/", branch_views.message_select_view, name="message-select"),
    # a knowledge ingest task's progress as SSE (docs/knowledge.md)
    path("knowledge/tasks/<str:task_id>/events/", knowledge_views.task_events, name="knowledge-task-events"),
    # seed 002's data-processing tasks and the upload into an index (realtime/seed002_tasks.py)
    re_path(r"^tasks/?$", seed002_tasks.tasks_root, name="seed002-tasks"),
    re_path(r"^tasks/batch/?$", seed002_tasks.tasks_batch, name="seed002-tasks-batch"),
    re_path(
        r"^tasks/indices/(?P<index_name>[^/]+)/tasks/?$",
        seed002_tasks.index_tasks,
        name="seed002-index-tasks",
    ),
    re_path(r"^tasks/(?P<task_id>[^/]+)/details/?$", seed002_tasks.task_details, name="seed002-task-details"),
    re_path(r"^tasks/(?P<task_id>[^/]+)/?$", seed002_tasks.task_status, name="seed002-task-status"),
    re_path(r"^file/upload/?$", seed002_tasks.file_upload, name="seed002-file-upload"),
    re_path(r"^indices/(?P<index_name>[^/]+)/documents/?$", _index_documents, name="seed002-index-documents"),
    # seed 002 (docs/dialects.md): the seed's paths, with or without a trailing slash
    re_path(r"^agent/run/?$", seed002.agent_run, name="seed002-agent-run"),
    re_path(r"^conversation/create/?$", seed002.conversation_create, name="seed002-conversation-create"),
    re_path(r"^conversation/list/?$", seed002.conversation_list, name="seed002-conversation-list"),
    re_path(r"^conversation/rename/?$", seed002.conversation_rename, name="seed002-conversation-rename"),
    re_path(r"^conversation/sources/?$", seed002.conversation_sources, name="seed002-conversation-sources"),
    re_path(
        r"^conversation/generate_title/?$",
        seed002.conversation_generate_title,
        name="seed002-conversation-generate-title",
    ),
    re_path(
        r"^conversation/message/update_opinion/?$",
        seed002.message_update_opinion,
        name="seed002-message-update-opinion",
    ),
    # seed 002: files, models, configuration, the image proxy (docs/dialects.md)
    re_path(r"^file/storage/?$", seed002_files.storage, name="seed002-file-storage"),
    re_path(r"^file/storage/batch-urls/?$", seed002_files.storage_batch_urls, name="seed002-file-batch-urls"),
    re_path(
        r"^file/storage/(?P<object_name>.+?)/?$", seed002_files.storage_object, name="seed002-file-object"
    ),
    re_path(r"^model/create/?$", seed002_models.model_create, name="seed002-model-create"),
    re_path(r"^model/update/?$", seed002_models.model_update, name="seed002-model-update"),
    re_path(r"^model/delete/?$", seed002_models.model_delete, name="seed002-model-delete"),
    re_path(r"^model/list/?$", seed002_models.model_list, name="seed002-model-list"),
    re_path(r"^model/healthcheck/?$", seed002_models.model_healthcheck, name="seed002-model-healthcheck"),
    re_path(
        r"^model/get_connect_status/?$",
        seed002_models.model_get_connect_status,
        name="seed002-model-get-connect-status",
    ),
    re_path(
        r"^model/update_connect_status/?$",
        seed002_models.model_update_connect_status,
        name="seed002-model-update-connect-status",
    ),
    re_path(r"^me/model/list/?$", seed002_models.me_model_list, name="seed002-me-model-list"),
    re_path(r"^me/healthcheck/?$", seed002_models.me_healthcheck, name="seed002-me-healthcheck"),
    re_path(
        r"^me/model/healthcheck/?$", seed002_models.me_model_healthcheck, name="seed002-me-model-healthcheck"
    ),
    re_path(r"^config/save_config/?$", seed002_models.save_config, name="seed002-save-config"),
    re_path(r"^config/load_config/?$", seed002_models.load_config, name="seed002-load-config"),
    re_path(r"^agent/reload_config/?$", seed002_models.reload_config, name="seed002-reload-config"),
    # seed 002: knowledge bases as indices, file preprocessing (docs/knowledge.md, "Seed 002 paths")
    re_path(r"^indices/?$", seed002_indices.indices, name="seed002-indices"),
    re_path(r"^indices/health/?$", seed002_indices.indices_health, name="seed002-indices-health"),
    re_path(r"^indices/(?P<index_name>[^/]+)/info/?$", seed002_indices.index_info, name="seed002-index-info"),
    # after info and documents: a base named "search" keeps those paths
    re_path(
        r"^indices/search/(?P<mode>[^/]+)/?$", seed002_indices.index_search, name="seed002-indices-search"
    ),
    re_path(r"^indices/(?P<index_name>[^/]+)/?$", seed002_indices.index, name="seed002-index"),
    re_path(r"^file/preprocess/?$", seed002_indices.file_preprocess, name="seed002-file-preprocess"),
    re_path(r"^proxy/image/?$", seed002_proxy.proxy_image, name="seed002-proxy-image"),
    re_path(
        r"^conversation/(?P<conversation_id>[^/]+)/?$",
        seed002.conversation_detail,
        name="seed002-conversation-detail",
    ),
]
