"""ASGI entry point: HTTP through Django, WebSocket through the realtime consumers, and the
``nexus-runs`` channel for run workers (``manage.py runworker nexus-runs``)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexus.settings")

from django.core.asgi import get_asgi_application

django_asgi_app = get_asgi_application()

from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from core.auth import single_user_mode_announce  # noqa: E402
from realtime.middleware import NexusAuthStack  # noqa: E402
from realtime.routing import websocket_urlpatterns  # noqa: E402
from realtime.send_buffer import install as install_send_buffer_limit  # noqa: E402
from runs.worker import RunWorkerConsumer  # noqa: E402

install_send_buffer_limit(settings.NEXUS_WS_MAX_SEND_BUFFER_BYTES)  # under daphne only
single_user_mode_announce()  # NEXUS_AUTH=off: said loudly by every serving process

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": NexusAuthStack(URLRouter(websocket_urlpatterns)),
        "channel": ChannelNameRouter({settings.NEXUS_RUN_CHANNEL: RunWorkerConsumer.as_asgi()}),
    }
)
