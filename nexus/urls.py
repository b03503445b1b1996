from django.contrib import admin
from django.urls import include, path

from nexus.health import health

urlpatterns = [
    path("health", health, name="health"),
    path("health/", health),
    path("admin/", admin.site.urls),
    # REST API (nexus/api_urls.py) and the realtime HTTP endpoints: invoke, stop, SSE (runs/urls.py).
    path("api/", include("runs.urls")),
    path("api/", include("nexus.api_urls")),
    path("", include("realtime.web_urls")),
]
