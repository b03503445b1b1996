"""One error shape under /api/ for every failure: unknown paths, methods, parse errors, media
types, bugs (500) and throttles; never an HTML page. Outside /api/ Django's pages stay."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from core.errors import Conflict, NotFound, RateLimited, ValidationFailed
from core.exceptions import exception_handler
from tests.api.conftest import assert_error

pytestmark = pytest.mark.django_db


def test_an_unknown_api_path_is_a_json_404(alice, anon):
    assert_error(alice.get("/api/nothing-here/"), 404, "not_found")
    assert_error(anon.get("/api/nothing/here/at/all"), 404, "not_found")
    assert_error(anon.post("/api/", {}, format="json"), 404, "not_found")


def test_a_missing_trailing_slash_gets_a_hint_not_a_redirect(alice):
    # (/api/agents without the slash is seed 000's own path: docs/dialects.md)
    body = assert_error(alice.post("/api/conversations", {}, format="json"), 404)
    assert "/api/conversations/" in body["detail"]


def test_a_malformed_id_is_a_json_404(alice):
    assert_error(alice.get("/api/agents/not-a-uuid/"), 404, "not_found")
    assert_error(alice.get("/api/conversations/123/"), 404, "not_found")


def test_a_wrong_method_is_a_json_405_with_allow(alice, alice_conversation):
    response = alice.put(f"/api/conversations/{alice_conversation.pk}/", {}, format="json")
    assert_error(response, 405, "method_not_allowed")
    assert "PATCH" in response["Allow"]
    assert_error(alice.get("/api/auth/ws-ticket"), 405, "method_not_allowed")
    assert_error(alice.delete("/api/agents/"), 405)


def test_a_malformed_json_body_is_a_parse_error(alice):
    response = alice.generic("POST", "/api/agents/", b"{broken", content_type="application/json")
    assert_error(response, 400, "parse_error")


def test_an_unsupported_content_type_is_415(alice):
    response = alice.generic("POST", "/api/conversations/", b"<xml/>", content_type="application/xml")
    assert_error(response, 415, "unsupported_media_type")


def test_validation_errors_list_each_field(alice):
    body = assert_error(alice.post("/api/agents/", {"temperature": "hot"}, format="json"), 400)
    assert body["code"] == "validation_error"
    assert set(body["errors"]) >= {"name", "model", "temperature"}
    assert all(isinstance(messages, list) and messages for messages in body["errors"].values())
    assert body["detail"].startswith(("name", "model", "temperature"))


@pytest.mark.urls("tests.api.urls_with_handlers")
def test_a_bug_in_an_api_view_is_a_json_500_without_details(user):
    client = APIClient(raise_request_exception=False)
    client.force_authenticate(user)
    for path in ("/api/boom-drf/", "/api/boom-plain/"):
        response = client.get(path)
        assert_error(response, 500, "internal")
        assert b"sk-should-never-be-shown" not in response.content
        assert b"Traceback" not in response.content


@pytest.mark.urls("tests.api.urls_with_handlers")
def test_outside_the_api_django_keeps_its_html_pages(client):
    client.raise_request_exception = False
    response = client.get("/boom-page/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.urls("tests.api.urls_with_handlers")
def test_the_handler404_answers_json_under_api():
    from django.test import RequestFactory

    from core.exceptions import handler404, handler500

    request = RequestFactory().get("/api/whatever")
    assert handler404(request, Exception()).status_code == 404
    assert handler404(request, Exception())["Content-Type"] == "application/json"
    assert handler500(request)["Content-Type"] == "application/json"


def test_the_project_urlconf_registers_the_json_error_handlers():
    from nexus import urls

    assert urls.handler404 == "core.exceptions.handler404"
    assert urls.handler500 == "core.exceptions.handler500"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ValidationFailed("Bad.", details={"name": ["Required."]}), 400, "validation_error"),
        (NotFound("Agent not found."), 404, "not_found"),
        (Conflict("Busy."), 409, "conflict"),
        (RateLimited("Slow down.", retry_after=2.2), 429, "rate_limited"),
    ],
)
def test_domain_errors_map_to_their_status_and_code(error, status, code):
    response = exception_handler(error, {})
    assert response.status_code == status
    assert response.data["code"] == code
    assert response.data["detail"] == error.message
    if status == 400:
        assert response.data["errors"] == {"name": ["Required."]}
    if status == 429:
        assert response["Retry-After"] == "3"
