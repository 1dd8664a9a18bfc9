"""What every FHIR R4 entrypoint of the platform shares (the referral service's and the capacity
service's `/fhir`): the media type, the national identifier systems and our canonical base, the
OperationOutcome every refusal becomes, and the route class that turns the platform's errors
into one. Resources themselves are built by each service's `fhir_mapping`."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from reflexe_common.audit import record_refusal
from reflexe_common.errors import ApiError

FHIR_JSON = "application/fhir+json"
FHIR_VERSION = "4.0.1"

FINESS_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
# Our canonical base: code systems, identifier systems and extensions no national guide carries.
BASE = "https://reflexe.example/fhir"
EXTENSION_BASE = f"{BASE}/StructureDefinition"

# FHIR's issue type for each HTTP status we answer with (412: a version conflict on update; a
# conditional create's several matches say multiple-matches themselves; 428: If-Match required).
ISSUE_CODE = {400: "structure", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
              409: "conflict", 412: "conflict", 413: "too-costly", 415: "not-supported", 422: "invalid",
              428: "required", 429: "throttled"}


class FhirInvalid(Exception):
    """A resource that cannot be taken: each problem names its element (a FHIRPath expression)."""

    def __init__(self, problems: list[tuple[str | None, str]], status: int = 422, code: str = "invalid") -> None:
        super().__init__("; ".join(f"{e}: {m}" for e, m in problems))
        self.problems, self.status, self.code = problems, status, code


def operation_outcome(problems: list[tuple[str | None, str]], code: str = "invalid",
                      severity: str = "error") -> dict[str, Any]:
    issues = []
    for expression, message in problems:
        issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
        if expression:
            issue["expression"] = [expression]
        issues.append(issue)
    return {"resourceType": "OperationOutcome", "issue": issues}


def fhir_response(resource: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(resource, status_code=status, media_type=FHIR_JSON, headers=headers)


def outcome(status: int, problems: list[tuple[str | None, str]], code: str | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    return fhir_response(operation_outcome(problems, code or ISSUE_CODE.get(status, "processing")), status, headers)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def finess_reference(finess: str) -> dict[str, Any]:
    """An establishment as a logical reference: the platform serves no Organization resource."""
    return {"type": "Organization", "identifier": {"system": FINESS_SYSTEM, "value": finess}}


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    found = {"system": system, "code": code}
    if display:
        found["display"] = display
    return found


def bundle(resources: list[dict[str, Any]], base_url: str) -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "total": len(resources)}
    if resources:  # FHIR forbids an empty array: no match, no entry element
        found["entry"] = [{"fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                           "search": {"mode": "match"}} for r in resources]
    return found


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


async def read_resource(request: Request, resource_type: str) -> Any:
    """The request's body as JSON, if it was sent as FHIR JSON (415, 400 otherwise)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (FHIR_JSON, "application/json"):
        raise FhirInvalid([(resource_type, f"send {FHIR_JSON}")], status=415, code="not-supported")
    try:
        return json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FhirInvalid([(resource_type, f"not JSON: {exc}")], status=400, code="structure") from exc


def expression_of(request: Request, field: str) -> str | None:
    """The FHIR element a REST field path (`body.places_available`) came from, when the route
    said so by setting `request.state.fhir_expression_of`; None otherwise."""
    translate: Callable[[str], str | None] | None = getattr(request.state, "fhir_expression_of", None)
    return translate(field) if translate is not None else None


class FhirRoute(APIRoute):
    """Every answer of a FHIR API is FHIR: the platform's errors (auth, scope, the REST rules'
    problem+json) become an OperationOutcome naming the element, with the same status and audit."""

    def get_route_handler(self) -> Callable:
        handler = super().get_route_handler()

        async def fhir_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except FhirInvalid as exc:
                return outcome(exc.status, list(exc.problems), exc.code)
            except ApiError as exc:
                record_refusal(request, exc.status, exc.code)
                headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
                problems: list[tuple[str | None, str]] = [
                    (expression_of(request, e["field"]), f"{exc.code}: {e['message']}")
                    for e in exc.errors] or [(None, f"{exc.code}: {exc.message}")]
                return outcome(exc.status, problems, headers=headers)
            except RequestValidationError as exc:
                return outcome(400, [(None, f"{'.'.join(map(str, e['loc']))}: {e['msg']}") for e in exc.errors()])

        return fhir_handler


_RESOURCE_SCHEMA = {"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}


def documented(descriptions: dict[str, str], *statuses: str, answer: str = "200", created: bool = False,
               body: bool = False) -> dict[str, Any]:
    """The OpenAPI document of a FHIR operation: FHIR resources in and out, each refusal an
    OperationOutcome described by `descriptions[status]` (401 always). The shared problem+json
    answers (reflexe_common.openapi) are added for the statuses not listed here (413, 429)."""
    responses: dict[str, Any] = {answer: {"description": "The resource", "content": {FHIR_JSON: {"schema": _RESOURCE_SCHEMA}}}}
    if created:
        responses["201"] = {"description": "Created", "content": {FHIR_JSON: {"schema": _RESOURCE_SCHEMA}}}
    for status in ("401", *statuses):
        responses[status] = {"description": descriptions[status], "content": {FHIR_JSON: {"schema": _RESOURCE_SCHEMA}}}
    responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}}
    extra: dict[str, Any] = {}
    if body:
        extra["requestBody"] = {"required": True, "content": {FHIR_JSON: {"schema": _RESOURCE_SCHEMA},
                                                              "application/json": {"schema": _RESOURCE_SCHEMA}}}
    return {"responses": responses, "openapi_extra": extra, "response_class": JSONResponse}
