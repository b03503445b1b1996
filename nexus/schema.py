"""OpenAPI (drf-spectacular) additions: the one error shape, documented on every operation.

Views document their success shapes with ``extend_schema``; :func:`add_error_responses` adds the
error responses every API operation can give (400/401/403/404/415/429, each the ``ErrorResponse``
shape), so the schema tells the truth about every status code a client can see.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema

ERROR_COMPONENT = "ErrorResponse"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Every error under /api/ (seed 001 ErrorResponse).",
    "properties": {
        "detail": {"type": "string", "description": "A human-readable message."},
        "code": {
            "type": "string",
            "description": "A stable machine-readable code, e.g. validation_error, not_found, rate_limited.",
        },
        "timestamp": {"type": "string", "format": "date-time"},
        "errors": {
            "type": "object",
            "additionalProperties": {},
            "description": "Validation errors only: {field: [messages]}.",
        },
    },
    "required": ["detail", "code", "timestamp"],
}

_DESCRIPTIONS = {
    "400": "Invalid input: `code` validation_error (with `errors`) or parse_error.",
    "401": "Missing, invalid or expired credentials.",
    "403": "Authenticated but not allowed (or a session request without its CSRF token).",
    "404": "No such object, or not yours: never a leak of existence.",
    "415": "Unsupported request content type.",
    "429": "Throttled; see the Retry-After header.",
}

_RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds until a request may succeed."}
}

# Operations (path prefix, method) that are public: no 401/403.
_PUBLIC_PREFIXES = ("/api/auth/login", "/api/auth/refresh")
_NO_THROTTLE_PREFIXES = ("/api/schema", "/api/docs")


class NexusAutoSchema(AutoSchema):
    """The project's AutoSchema (hook point for per-view tweaks)."""


def add_error_responses(result: dict[str, Any], generator: Any, **kwargs: Any) -> dict[str, Any]:
    """Postprocessing hook: document the error responses of every ``/api/`` operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_SCHEMA
    ref = {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}
    # seed 001 spells the auth endpoints without a trailing slash (both forms are routed)
    result["paths"] = {
        (path.rstrip("/") if path.startswith("/api/auth/") else path): item
        for path, item in result.get("paths", {}).items()
    }
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/") or path.startswith(_NO_THROTTLE_PREFIXES):
            continue
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            codes = {"429"}
            has_body = "requestBody" in operation
            has_query = any(p.get("in") == "query" for p in operation.get("parameters", []))
            if has_body or has_query or path.startswith("/api/auth/"):
                codes.add("400")
            if has_body:
                codes.add("415")
            if not path.startswith(_PUBLIC_PREFIXES):
                codes.update({"401", "403"})
            else:
                codes.add("401")  # bad credentials
            if "{" in path or has_query:
                codes.add("404")
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
            for code, entry in responses.items():
                if code[0] in "45":
                    entry["content"] = {"application/json": {"schema": ref}}
                if code == "429":
                    entry["headers"] = _RETRY_AFTER
    return result
