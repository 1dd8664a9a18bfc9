"""The refusals every service answers, written into its OpenAPI document.

Errors are produced in one place for all services (http.py handlers, limits.py, auth.py), so
they are documented in one place too: each operation lists the problem+json answers it can
give, derived from what it takes (a token, parameters, a body) rather than declared route by
route, where one would be forgotten. API fuzzing (tests/integration/fuzz) holds the services to
this: an answer whose status is not listed here fails the suite.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details with a machine-readable code; `errors` names each bad field.",
    "type": "object",
    "required": ["type", "title", "status", "code"],
    "properties": {
        "type": {"type": "string", "description": "urn:reflexe:error:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}, "type": {"type": "string"}},
            },
        },
    },
}

_DESCRIPTIONS = {
    "401": "No token, or a token this service does not trust (MISSING_TOKEN, INVALID_TOKEN)",
    "403": "The caller's role or scope does not allow this (ROLE_FORBIDDEN, OUT_OF_SCOPE)",
    "404": "Nothing of that id visible to the caller",
    "409": "The resource's state or an earlier request conflicts with this one",
    "413": "The request body is larger than the service accepts",
    "422": "A parameter or the body is invalid; `errors[].field` names each one",
    "429": "Too many requests from this caller; retry after Retry-After seconds",
}
_HEADERS = {
    "401": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    "429": {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}},
}
_CHANGING_METHODS = {"post", "put", "patch", "delete"}


def problem_statuses(method: str, operation: dict[str, Any]) -> list[str]:
    """The refusals an operation can answer with, from what it takes."""
    parameters = operation.get("parameters", [])
    statuses = []
    if operation.get("security"):
        statuses += ["401", "403", "429"]
    if parameters or "requestBody" in operation:
        statuses.append("422")
    if "requestBody" in operation:
        statuses.append("413")
    if any(p.get("in") == "path" for p in parameters):
        statuses.append("404")
    if method in _CHANGING_METHODS and operation.get("security"):
        statuses.append("409")
    return sorted(statuses)


def add_problem_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: run on the generated document, which FastAPI caches."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for operations in schema.get("paths", {}).values():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status in problem_statuses(method, operation):
                if "application/fhir+json" in responses.get(status, {}).get("content", {}):
                    continue  # a FHIR route answers its refusals as OperationOutcome (reflexe_common.fhir.FhirRoute)
                # FastAPI's own 422 describes its default body, which the services never send.
                responses[status] = {
                    "description": _DESCRIPTIONS[status],
                    "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
                    **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
                }
    readyz = schema.get("paths", {}).get("/readyz", {}).get("get")
    if readyz is not None:
        readyz["responses"]["503"] = {"description": "Kafka or PostgreSQL is unreachable (each check says which)",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}
    metrics = schema.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:  # Prometheus' text format, not the JSON FastAPI assumes
        metrics["responses"]["200"] = {"description": "Prometheus text exposition format",
                                       "content": {"text/plain": {"schema": {"type": "string"}}}}
    schemas = schema["components"]["schemas"]
    if not any("HTTPValidationError" in str(op) for ops in schema.get("paths", {}).values() for op in ops.values()):
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
    return schema


def document_problems(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        return add_problem_responses(generate())

    app.openapi = openapi  # type: ignore[method-assign]
