"""One error shape for every error under ``/api/``: ``{"detail", "code", "timestamp"}``.

Validation errors add ``"errors": {field: [messages]}``; throttled answers (429) carry a
``Retry-After`` header and ``"retry_after"`` (seconds, a number) in the body. A request body past
``DATA_UPLOAD_MAX_MEMORY_SIZE`` answers 413 ``message_too_large``. DRF calls :func:`exception_handler` for everything raised in an API view;
:func:`api_not_found` answers unknown ``/api/`` paths, and :func:`handler404` / :func:`handler500`
are Django's error views for the root URLconf (JSON under ``/api/``, Django's HTML elsewhere).
Users see a clear message and a code; the traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils import timezone
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions as drf
from rest_framework.response import Response

from core.errors import NexusError, TooLarge

logger = logging.getLogger("nexus.api")

API_PREFIX = "/api/"
BEARER_CHALLENGE = 'Bearer realm="api"'

# DRF exception class -> our code. Codes are part of the API contract (docs/api.md).
_DRF_CODES: tuple[tuple[type[drf.APIException], str], ...] = (
    (drf.ValidationError, "validation_error"),
    (drf.ParseError, "parse_error"),
    (drf.NotAuthenticated, "not_authenticated"),
    (drf.AuthenticationFailed, "authentication_failed"),
    (drf.PermissionDenied, "forbidden"),
    (drf.NotFound, "not_found"),
    (drf.MethodNotAllowed, "method_not_allowed"),
    (drf.NotAcceptable, "not_acceptable"),
    (drf.UnsupportedMediaType, "unsupported_media_type"),
    (drf.Throttled, "rate_limited"),
)


def error_body(
    detail: str, code: str, *, errors: Any = None, retry_after: float | None = None
) -> dict[str, Any]:
    """The one error shape (``retry_after``: whole seconds, as in the ``Retry-After`` header)."""
    body: dict[str, Any] = {"detail": str(detail), "code": code, "timestamp": timezone.now().isoformat()}
    if errors is not None:
        body["errors"] = errors
    if retry_after is not None:
        body["retry_after"] = retry_after_seconds(retry_after)
    return body


def retry_after_seconds(seconds: float) -> int:
    """A wait as the whole seconds of ``Retry-After`` (at least 1)."""
    return max(1, math.ceil(seconds))


def _field_errors(data: Any) -> dict[str, Any]:
    """DRF's ValidationError detail as ``{field: [messages]}`` (non-field errors under ``non_field_errors``)."""
    if isinstance(data, dict):
        return {str(key): _messages(value) for key, value in data.items()}
    return {"non_field_errors": _messages(data)}


def _messages(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _messages(item) for key, item in value.items()}
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return [str(item) for item in value]
        # a list of nested objects (e.g. one per list item): keep the structure
        return [_messages(item) for item in value]
    return [str(value)]


def _first_message(errors: dict[str, Any]) -> str:
    for field, messages in errors.items():
        while isinstance(messages, dict | list) and messages:
            messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
        if messages:
            return f"{field}: {messages}" if field != "non_field_errors" else str(messages)
    return "Invalid input."


def _retry_after_header(seconds: float | None) -> dict[str, str]:
    if seconds is None:
        return {}
    return {"Retry-After": str(retry_after_seconds(seconds))}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF's EXCEPTION_HANDLER: every exception raised in an API view becomes the one shape."""
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        exc = TooLarge("The request body is too large.")

    if isinstance(exc, NexusError):
        retry_after = exc.retry_after if exc.http_status == 429 else None
        if exc.http_status == 429 and retry_after is None:
            retry_after = 1.0
        headers = _retry_after_header(retry_after)
        if exc.http_status == 401:
            headers["WWW-Authenticate"] = BEARER_CHALLENGE
        errors = _field_errors(exc.details) if exc.code == "validation_error" and exc.details else None
        body = error_body(exc.message, exc.code, errors=errors, retry_after=retry_after)
        return Response(body, status=exc.http_status, headers=headers)

    if isinstance(exc, drf.APIException):
        code = next((code for cls, code in _DRF_CODES if isinstance(exc, cls)), None)
        if code is None:
            code = str(exc.default_code or "error")
        headers = {}
        if isinstance(exc, drf.Throttled):
            waited: float | None = exc.wait  # type: ignore[attr-defined]  # set by DRF, not in its stubs
            wait = waited if waited is not None else 1.0
            headers.update(_retry_after_header(wait))
            detail = "Too many requests."
            if waited is not None:
                detail = f"Too many requests. Try again in {retry_after_seconds(waited)} s."
            body = error_body(detail, code, retry_after=wait)
        elif isinstance(exc, drf.ValidationError):
            errors = _field_errors(exc.detail)
            body = error_body(_first_message(errors), code, errors=errors)
        else:
            body = error_body(_plain(exc.detail), code)
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            headers["WWW-Authenticate"] = auth_header
        return Response(body, status=exc.status_code, headers=headers)

    # Anything else is a bug: the client gets a code, the log gets the traceback.
    request = context.get("request")
    logger.exception(
        "Unhandled error in %s %s", getattr(request, "method", "?"), getattr(request, "path", "?")
    )
    return Response(error_body("Internal server error.", "internal"), status=500)


def _plain(detail: Any) -> str:
    if isinstance(detail, list) and detail:
        return str(detail[0])
    if isinstance(detail, dict) and detail:
        return str(next(iter(detail.values())))
    return str(detail)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/")


@csrf_exempt  # it changes nothing; a CSRF page here would be HTML under /api/
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """The last ``/api/`` route: an unknown path answers JSON, never Django's HTML page.

    A path that exists with a trailing slash gets a hint instead of Django's redirect (which would
    turn a POST into a GET and drop its body)."""
    detail = "Not found."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.url_name != "api-not-found":
            detail = f"Not found. Did you mean {request.path}/ ?"
    return JsonResponse(error_body(detail, "not_found"), status=404)


def handler404(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Root URLconf handler404: JSON under /api/, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(error_body("Not found.", "not_found"), status=404)
    return defaults.page_not_found(request, exception)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: JSON 403 under /api/ (a session-authenticated write without its token)."""
    if _is_api(request):
        return JsonResponse(
            error_body("CSRF check failed: send the X-CSRFToken header.", "forbidden"), status=403
        )
    return csrf.csrf_failure(request, reason=reason)


def handler500(request: HttpRequest) -> HttpResponse:
    """Root URLconf handler500: JSON under /api/, Django's page elsewhere."""
    if _is_api(request):
        return JsonResponse(error_body("Internal server error.", "internal"), status=500)
    return defaults.server_error(request)
