"""/api/docs/ works offline: Swagger UI comes from this server, and lists the operations."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_the_api_docs_load_everything_from_this_origin_and_list_the_operations(nexus, page):
    own = urlsplit(nexus.url).netloc
    hosts: list[str] = []
    page.on("request", lambda request: hosts.append(urlsplit(request.url).netloc))
    # Anything for another host fails at once, as it would on a machine without internet.
    page.route(
        "**/*",
        lambda route: route.continue_() if urlsplit(route.request.url).netloc == own else route.abort(),
    )
    page.goto("/api/docs/")
    page.locator(".swagger-ui .opblock-tag", has_text="agents").first.wait_for()
    page.locator(".swagger-ui .opblock .opblock-summary-path", has_text="/api/agents/").first.wait_for()
    assert page.locator(".swagger-ui .opblock").count() > 20
    assert page.locator(".swagger-ui .info .title", has_text="Nexus API").count() == 1
    assert set(hosts) == {own}, hosts
