from django.apps import AppConfig


class WebConfig(AppConfig):
    """The browser pages: the chat page at ``/`` and its sign-in and sign-out pages."""

    name = "web"
