"""ASGI entry point: HTTP through Django, WebSocket through the realtime consumers, and the
`nexus-runs` channel for run workers (`manage.py runworker nexus-runs`)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexus.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

application = ProtocolTypeRouter({"http": django_asgi_app})
