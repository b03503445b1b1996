"""The OpenAI-compatible ``/v1`` (docs/v1.md); every other ``/v1/`` path is a 404 in OpenAI's shape."""

from django.urls import path, re_path

from realtime import v1_views as views

urlpatterns = [
    path("models", views.models, name="v1-models"),
    path("models/<str:model>", views.model_detail, name="v1-model"),
    path("chat/completions", views.chat_completions, name="v1-chat-completions"),
    path("responses", views.responses, name="v1-responses"),
    path("responses/<str:response_id>", views.response_detail, name="v1-response"),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
