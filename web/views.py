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

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.template.response import TemplateResponse
from django.urls import reverse, reverse_lazy
from django.utils.decorators import method_decorator
from django.views.decorators.cache import never_cache

from core.auth import single_user_for
from core.throttles import login_attempt_hit, retry_after_seconds

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


def _single_user_signed_in(
    view: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Single-user mode (``NEXUS_AUTH=off``): an anonymous visitor of the page is signed in as the
    one local user (a session, as after the sign-in form), so the page needs no login, as the mode
    promises. The admin is not covered: that user is never staff."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            user = single_user_for(origin=request.headers.get("Origin"), host=request.get_host())
            if user is not None:
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return view(request)

    return wrapped


@never_cache
@with_csp
@_single_user_signed_in
@login_required(login_url=LOGIN_URL)
def chat_page(request: HttpRequest) -> HttpResponse:
    """``/``: the chat client. Anonymous visitors go to the sign-in page first (in single-user
    mode they are the local user)."""
    return TemplateResponse(request, "nexus/chat.html", {"nexus_config": _page_config(request)})


class ThrottledLoginMixin:
    """A login form that counts each attempt against the login throttle (per IP and per username,
    ``NEXUS_THROTTLE_LOGIN``, one budget with ``/api/auth/login``) before anything else: over the
    budget, the password is not checked at all and the form says when to try again."""

    request: HttpRequest | None
    data: Any
    throttled_for: float | None = None

    def clean(self) -> dict[str, Any]:
        if self.request is None:
            raise forms.ValidationError("A login form needs its request.", code="no_request")
        wait = login_attempt_hit(self.request, self.data.get("username"))
        if wait is not None:
            self.throttled_for = wait
            raise forms.ValidationError(
                "Too many sign-in attempts. Try again in %(seconds)d seconds.",
                code="throttled",
                params={"seconds": retry_after_seconds(wait)},
            )
        return super().clean()  # type: ignore[misc]


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    """The sign-in page's form."""


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin's login form (staff only, as Django's)."""


def throttled_status(response: HttpResponse) -> HttpResponse:
    """A login page whose form was refused by the throttle answers 429 with ``Retry-After``."""
    form = (getattr(response, "context_data", None) or {}).get("form")
    wait = getattr(form, "throttled_for", None)
    if wait is not None:
        response.status_code = 429
        response["Retry-After"] = str(retry_after_seconds(wait))
    return response


@method_decorator([never_cache, with_csp], name="dispatch")
class SignInView(auth_views.LoginView):
    """Django's session login with Nexus's template; signed-in visitors go straight to the chat."""

    template_name = "nexus/login.html"
    redirect_authenticated_user = True
    authentication_form = ThrottledAuthenticationForm

    def get_default_redirect_url(self) -> str:
        return reverse("nexus-chat")

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        return throttled_status(super().form_invalid(form))


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """``/admin/login/``: the admin site's own login (its form is the throttled one, see
    ``nexus/urls.py``), answering 429 when the throttle refused the attempt."""
    return throttled_status(admin.site.login(request, extra_context))


@method_decorator(with_csp, name="dispatch")
class SignOutView(auth_views.LogoutView):
    """POST only (Django 5): ends the session and returns to the sign-in page."""

    next_page = LOGIN_URL
