from django.contrib import admin
from django.urls import include, path

from nexus.health import health
from web.views import ThrottledAdminAuthenticationForm, admin_login

# Every login form is throttled per IP and per username (SPEC section 12), the admin's included.
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    path("health", health, name="health"),
    path("health/", health),
    # the admin's login, throttled like every login form (before admin.site.urls claims the path)
    path("admin/login/", admin_login, name="admin-login"),
    path("admin/", admin.site.urls),
    # REST API (nexus/api_urls.py) and the realtime HTTP endpoints: invoke, stop, SSE (realtime/http_urls.py).
    path("api/", include("realtime.http_urls")),
    path("api/", include("nexus.api_urls")),
    path("", include("web.urls")),
]

# Errors under /api/ answer in the one JSON error shape; pages elsewhere stay Django's.
handler404 = "core.exceptions.handler404"
handler500 = "core.exceptions.handler500"
