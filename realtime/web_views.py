"""The browser chat page at ``/`` and its sign-in page.

Both are plain Django templates with static JS/CSS (no build step, nothing from a CDN). Every page
here carries a strict Content-Security-Policy: scripts and styles only from this origin, no inline
script, WebSockets only to this host. Model output is never HTML on the page (the JS sets
``textContent``), so even a reply full of markup is shown as text.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

LOGIN_URL = reverse_lazy("nexus-login")


def content_security_policy(request: HttpRequest) -> str:
    """The policy of the web pages: this origin only, plus WebSockets to this host."""
    host = request.get_host()
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src 'self' ws://{host} wss://{host}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def with_csp(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Set the Content-Security-Policy (and a few related headers) on a view's responses."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", content_security_policy(request))
        response.setdefault("Referrer-Policy", "same-origin")
        response.setdefault("X-Content-Type-Options", "nosniff")
        response.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
        return response

    return wrapped


def _page_config(request: HttpRequest) -> dict[str, Any]:
    """What the page's JS needs to start, handed over as a JSON script tag (never executed)."""
    user = request.user
    return {
        "user": {"id": user.pk, "username": user.get_username(), "is_staff": user.is_staff},
        "csrf_token": get_token(request),
        "api": "/api/",
        "ws_path": "/ws/conversations/{id}/",
        "login_url": str(LOGIN_URL),
        "logout_url": reverse("nexus-logout"),
        "admin_url": reverse("admin:index") if user.is_staff else None,
        "version": settings.NEXUS_VERSION,
        "limits": {
            "max_message_bytes": settings.NEXUS_WS_MAX_MESSAGE_BYTES,
            "messages_per_minute": settings.NEXUS_WS_MESSAGES_PER_MINUTE,
        },
    }


@never_cache
@with_csp
@login_required(login_url=LOGIN_URL)
def chat_page(request: HttpRequest) -> HttpResponse:
    """``/``: the chat client. Anonymous visitors go to the sign-in page first."""
    return TemplateResponse(request, "nexus/chat.html", {"nexus_config": _page_config(request)})


@method_decorator([never_cache, with_csp], name="dispatch")
class SignInView(auth_views.LoginView):
    """Django's session login with Nexus's template; signed-in visitors go straight to the chat."""

    template_name = "nexus/login.html"
    redirect_authenticated_user = True

    def get_default_redirect_url(self) -> str:
        return reverse("nexus-chat")


@method_decorator(with_csp, name="dispatch")
class SignOutView(auth_views.LogoutView):
    """POST only (Django 5): ends the session and returns to the sign-in page."""

    next_page = LOGIN_URL
