"""The OpenAPI description tells the truth about error answers.

FastAPI documents a 422 ``HTTPValidationError`` on every operation with parameters, but ioc
answers malformed requests with a 400 and the OGC exception body of :mod:`api.errors`, and it
answers unknown keys (401), hidden or unknown resources (404) and a lost database (503) on
every operation where they can happen. Pages with an ``f`` parameter negotiate through
:func:`api.html.negotiate`: ``?f=html`` (or ``Accept: text/html``) answers HTML as well.
:func:`document_errors` rewrites the generated description once so that clients (and the
schemathesis test) see the statuses and media types ioc really sends.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from fastapi import FastAPI

# The ``responses=`` of a route: extra answers by status code, as FastAPI types them.
Responses: TypeAlias = dict[int | str, dict[str, Any]]

ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "OGC API exception: a code, one sentence, and the offending parameter.",
    "required": ["code", "description"],
    "properties": {
        "code": {"type": "string", "description": "Error class, e.g. InvalidParameter."},
        "description": {"type": "string", "description": "What is wrong, in one sentence."},
        "parameter": {"type": "string", "description": "The offending parameter."},
        "report": {"type": "object", "description": "Upload validation report (422)."},
    },
}
ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
DESCRIPTIONS = {
    400: "Invalid request: the body says which parameter and why",
    401: "The API key sent is unknown or revoked (or a key is needed)",
    403: "The caller may not do this",
    404: "Not found, or not readable by the caller (the same answer on purpose)",
    413: "The request or its answer is too large",
    503: "The database is unavailable or the request ran past its time limit",
}
WRITES = {"post", "put", "patch", "delete"}


def _statuses(method: str, operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from its parameters and method."""
    params = operation.get("parameters", [])
    where = {p["in"] for p in params}
    keyed = any(p["in"] == "header" and p["name"].lower() == "authorization" for p in params)
    found: set[int] = set()
    if params or "requestBody" in operation:
        found |= {400, 503}
    if keyed:
        found |= {401, 503}
        if method in WRITES:
            found.add(403)
    if "path" in where:
        found.add(404)
    if "requestBody" in operation:
        found.add(413)
    return found


def _has_query(operation: dict[str, Any], name: str) -> bool:
    return any(p["in"] == "query" and p["name"] == name for p in operation.get("parameters", []))


def _is_fastapi_validation(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return schema.get("$ref", "").endswith("/HTTPValidationError")


def rewrite(description: dict[str, Any]) -> dict[str, Any]:
    """Document ioc's error answers in a generated description (edited in place)."""
    for item in description.get("paths", {}).values():
        for method, operation in item.items():
            responses = operation.setdefault("responses", {})
            if _is_fastapi_validation(responses.get("422", {})):
                del responses["422"]
            for status in sorted(_statuses(method, operation)):
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status]})
            for status, response in responses.items():
                if status.startswith("4") and "content" not in response:
                    response["content"] = ERROR_CONTENT
            if method == "get" and _has_query(operation, "f") and "200" in responses:
                responses["200"].setdefault("content", {}).setdefault("text/html", {})
    schemas = description.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA
    return description


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` return the rewritten description (built once, then cached)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = rewrite(generate())  # edited in place; cached by FastAPI too
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
