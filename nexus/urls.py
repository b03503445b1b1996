from django.contrib import admin
from django.urls import include, path, re_path

from nexus import auth_apis
from nexus.health import health
from realtime.dialects.seed001_http import seed001_view
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
    # the OpenAI-compatible front door (realtime/v1_views.py, docs/v1.md)
    path("v1/", include("realtime.v1_urls")),
    # seed 001's REST dialect at the root (realtime/dialects/seed001_http.py, docs/dialects.md)
    re_path(r"^auth/login/?$", seed001_view(auth_apis.LoginView).as_view(), name="seed001-login"),
    re_path(r"^auth/verify/?$", seed001_view(auth_apis.VerifyView).as_view(), name="seed001-verify"),
    path("", include("realtime.dialects.seed001_http")),
    path("", include("web.urls")),
]

# Errors under /api/ answer in the one JSON error shape; pages elsewhere stay Django's.
handler404 = "core.exceptions.handler404"
handler500 = "core.exceptions.handler500"
