"""OpenAPI 3 at /api/schema/, Swagger UI at /api/docs/, and every operation documented."""

from __future__ import annotations

import io

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db

SPEC_PATHS = {
    "/api/auth/login": {"post"},
    "/api/auth/refresh": {"post"},
    "/api/auth/verify": {"post"},
    "/api/auth/ws-ticket": {"post"},
    "/api/agents/": {"get", "post"},
    "/api/agents/{agent_id}/": {"get", "put", "patch", "delete"},
    "/api/agents/{agent_id}/status/": {"get"},
    "/api/providers/": {"get"},
    "/api/conversations/": {"get", "post"},
    "/api/conversations/{conversation_id}/": {"get", "patch", "delete"},
    "/api/conversations/{conversation_id}/generate-title/": {"post"},
    "/api/messages/{message_id}/feedback/": {"post"},
    "/api/stats/": {"get"},
}


@pytest.fixture
def schema(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_the_schema_is_openapi_3_and_needs_no_auth(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["title"] == "Nexus API"
    assert schema["components"]["securitySchemes"]["jwtAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /api/auth/login.",
    }


def test_every_endpoint_of_this_issue_is_in_the_schema(schema):
    for path, methods in SPEC_PATHS.items():
        assert path in schema["paths"], path
        assert methods <= set(schema["paths"][path]), (path, set(schema["paths"][path]))


def test_every_operation_documents_its_request_success_and_errors(schema):
    error_ref = "#/components/schemas/ErrorResponse"
    for path, methods in SPEC_PATHS.items():
        for method in methods:
            operation = schema["paths"][path][method]
            assert operation.get("summary"), (method, path)
            assert operation.get("tags"), (method, path)
            successes = [code for code in operation["responses"] if code.startswith("2")]
            assert successes, (method, path)
            for code in successes:
                if code != "204":
                    assert operation["responses"][code].get("content"), (method, path, code)
            if method in {"post", "put", "patch"} and path not in {
                "/api/auth/verify",
                "/api/auth/ws-ticket",
                "/api/conversations/{conversation_id}/generate-title/",
            }:
                assert "requestBody" in operation, (method, path)
            for code in ("401", "429"):
                body = operation["responses"][code]["content"]["application/json"]["schema"]
                assert body == {"$ref": error_ref}, (method, path, code)
    assert set(schema["components"]["schemas"]["ErrorResponse"]["required"]) == {
        "detail",
        "code",
        "timestamp",
    }


def test_the_login_body_may_be_json_or_form_encoded(schema):
    content = schema["paths"]["/api/auth/login"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/x-www-form-urlencoded"} <= set(content)
    assert schema["paths"]["/api/auth/login"]["post"].get("security") in (None, [], [{}])


def test_lists_are_documented_as_paginated(schema):
    ok = schema["paths"]["/api/agents/"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/PaginatedAgentList"}
    names = {p["name"] for p in schema["paths"]["/api/agents/"]["get"]["parameters"]}
    assert {"page", "page_size", "status", "workspace", "provider"} <= names


def test_the_schema_generates_without_warnings():
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)
    assert yaml.safe_load(out.getvalue())["openapi"].startswith("3.")


def test_the_swagger_ui_is_served_from_this_server_with_no_inline_script(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "swagger-ui" in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "http://" not in page.replace("http://testserver", "") and "https://" not in page
    script = client.get("/api/docs/?script=")  # the start-up script, a file of its own
    assert script.status_code == 200
    assert "/api/schema/" in script.content.decode()
