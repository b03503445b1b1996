"""Fetching a URL to add it to a knowledge base: through the egress policy (core/egress.py: public
addresses only unless ``NEXUS_EGRESS_ALLOW`` lets a host through), at most ``NEXUS_FILE_MAX_BYTES``,
at most 3 redirects; the type is read from the bytes later (``document_add_bytes`` sniffs them)."""

from __future__ import annotations

import logging
from urllib.parse import unquote, urlsplit

import httpx
from django.conf import settings

from core.egress import EgressDenied, EgressPolicy
from core.errors import NexusError, TooLarge, ValidationFailed

logger = logging.getLogger(__name__)
MAX_URL_CHARS = 2048
MAX_REDIRECTS = 3
TIMEOUT = 20.0


class FetchFailed(NexusError):
    code = "upstream_error"
    http_status = 502


class EgressRefused(NexusError):
    code = "egress_denied"
    http_status = 403


def url_validate(url: object) -> str:
    if not isinstance(url, str) or not url.strip():
        raise ValidationFailed("url is required.", details={"url": ["Required."]})
    url = url.strip()
    if len(url) > MAX_URL_CHARS or not url.lower().startswith(("http://", "https://")):
        raise ValidationFailed(f"url is an http(s) address of at most {MAX_URL_CHARS} characters.")
    try:
        if not httpx.URL(url).host:
            raise ValidationFailed("url names no host.")
    except (httpx.InvalidURL, ValueError):
        raise ValidationFailed("url is not a valid address.") from None
    return url


def url_filename(url: str, content_type: str = "") -> str:
    """A file name for the fetched bytes: the path's last part, else one from the type."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])[:200]
    if "." not in name:
        if "html" in content_type:
            name = (name or "page") + ".html"
        elif "markdown" in content_type:
            name = (name or "page") + ".md"
        elif "text/" in content_type:
            name = (name or "page") + ".txt"
    return name or "document"


async def fetch_url(url: str) -> tuple[bytes, str]:
    """The bytes at ``url`` and a file name for them."""
    url = url_validate(url)
    limit = settings.NEXUS_FILE_MAX_BYTES
    policy = EgressPolicy.build(allow=settings.NEXUS_EGRESS_ALLOW, keys=settings.NEXUS_PROVIDER_API_KEYS)
    too_large = TooLarge(f"The document at that address is larger than {limit} bytes.")
    too_large.code = "file_too_large"
    try:
        async with (
            httpx.AsyncClient(
                transport=policy.transport(),
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=httpx.Timeout(TIMEOUT),
            ) as client,
            client.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise FetchFailed(f"The address answered {response.status_code}.")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_large
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise too_large
            content_type = response.headers.get("Content-Type", "").lower()
            return bytes(data), url_filename(str(response.url), content_type)
    except EgressDenied as exc:
        logger.info("knowledge url refused: %s", exc)
        raise EgressRefused(
            "This address is not allowed by the server's egress policy (public addresses only)."
        ) from None
    except httpx.TooManyRedirects:
        raise FetchFailed(f"More than {MAX_REDIRECTS} redirects.") from None
    except httpx.TimeoutException:
        raise FetchFailed("The address did not answer in time.") from None
    except httpx.HTTPError as exc:
        logger.info("knowledge url fetch failed: %s", exc.__class__.__name__)
        raise FetchFailed("The address could not be fetched.") from None
