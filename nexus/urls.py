from django.contrib import admin
from django.urls import path

from nexus.health import health

urlpatterns = [
    path("health", health, name="health"),
    path("health/", health),
    path("admin/", admin.site.urls),
]
