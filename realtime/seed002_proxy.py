"""Seed 002's image proxy (``GET /api/proxy/image?url=``, docs/dialects.md "Seed 002: proxy"):
fetch a remote image for the page -> ``{success, base64, content_type}``.

The fetch obeys the egress policy (core/egress.py) built from the operator's allow list alone:
public addresses, plus ``NEXUS_EGRESS_ALLOW``; every redirect hop re-checked, DNS answers checked
after resolution, no operator key ever sent. Only images (PNG, JPEG, GIF, WebP, read from the
bytes, never from the upstream's Content-Type) of at most ``NEXUS_PROXY_IMAGE_MAX_BYTES`` pass;
answers are cached (the shared Django cache) for ``NEXUS_PROXY_IMAGE_CACHE_SECONDS``.

Refusals answer ``{success: false, detail, code, timestamp}``: 400 ``validation_error`` (no or a
bad URL), 403 ``egress_denied``, 413 ``image_too_large``, 415 ``unsupported_media_type``, 502
``upstream_error`` (the remote answered with an error, or not at all), 504 ``upstream_timeout``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

import httpx
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponseBase, JsonResponse

from core.auth import User
from core.egress import EgressDenied, EgressPolicy, url_host_port
from core.exceptions import error_body
from core.filetypes import IMAGE_TYPES, UnsupportedType, sniff
from realtime import http_views as native
from realtime.seed002_files import params

logger = logging.getLogger("nexus.proxy")

MAX_URL_CHARS = 2048
MAX_REDIRECTS = 3
CACHE_PREFIX = "nexus:proxy-image:"


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _refusal(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"success": False, **error_body(message, code)}, status=status)


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Refused(400, "validation_error", "url is required: the image's http(s) address.")
    url = value.strip()
    if len(url) > MAX_URL_CHARS or not url.lower().startswith(("http://", "https://")):
        raise Refused(
            400, "validation_error", f"url is an http(s) address of at most {MAX_URL_CHARS} characters."
        )
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise Refused(400, "validation_error", "url is not a valid address.") from None
    if url_host_port(url) is None:
        raise Refused(400, "validation_error", "url names no host.")
    return url


async def _fetch(url: str) -> bytes:
    limit = settings.NEXUS_PROXY_IMAGE_MAX_BYTES
    policy = EgressPolicy.build(allow=settings.NEXUS_EGRESS_ALLOW, keys=settings.NEXUS_PROVIDER_API_KEYS)
    timeout = httpx.Timeout(settings.NEXUS_PROXY_IMAGE_TIMEOUT)
    too_large = Refused(413, "image_too_large", f"The image is larger than {limit} bytes.")
    try:
        async with (
            httpx.AsyncClient(
                transport=policy.transport(),
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=timeout,
            ) as client,
            client.stream("GET", url, headers={"Accept": "image/*"}) as response,
        ):
            if response.status_code != 200:
                raise Refused(502, "upstream_error", f"The image's server answered {response.status_code}.")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_large
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise too_large
            return bytes(data)
    except EgressDenied as exc:
        logger.info("image proxy refused: %s", exc)
        raise Refused(
            403,
            "egress_denied",
            "This address is not allowed by the server's egress policy (public addresses only).",
        ) from None
    except httpx.TooManyRedirects:
        raise Refused(502, "upstream_error", f"More than {MAX_REDIRECTS} redirects.") from None
    except httpx.TimeoutException:
        raise Refused(504, "upstream_timeout", "The image's server did not answer in time.") from None
    except httpx.HTTPError as exc:
        logger.info("image proxy fetch failed: %s", exc.__class__.__name__)
        raise Refused(502, "upstream_error", "The image could not be fetched.") from None


async def _image(url: str) -> dict[str, Any]:
    key = CACHE_PREFIX + hashlib.sha256(url.encode()).hexdigest()
    cached = await cache.aget(key)
    if cached is not None:
        return dict(cached)
    data = await _fetch(url)
    try:
        content_type = sniff(data)
    except UnsupportedType:
        content_type = ""
    if content_type not in IMAGE_TYPES:
        raise Refused(415, "unsupported_media_type", "Not an image (PNG, JPEG, GIF or WebP).")
    answer = {"success": True, "base64": base64.b64encode(data).decode("ascii"), "content_type": content_type}
    if settings.NEXUS_PROXY_IMAGE_CACHE_SECONDS:
        await cache.aset(key, answer, settings.NEXUS_PROXY_IMAGE_CACHE_SECONDS)
    return answer


@native.authenticated_endpoint
async def proxy_image(request: HttpRequest, *, user: User) -> HttpResponseBase:
    """``GET /api/proxy/image?url=`` -> ``{success, base64, content_type}``."""
    if request.method != "GET":
        return _refusal(405, "method_not_allowed", "Use GET.")
    try:
        return JsonResponse(await _image(_url(params(request).get("url"))))
    except Refused as exc:
        return _refusal(exc.status, exc.code, exc.message)
