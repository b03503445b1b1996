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

# Errors under /api/ answer in the one JSON error shape; pages elsewhere stay Django's.
handler404 = "nexus.exceptions.handler404"
handler500 = "nexus.exceptions.handler500"
