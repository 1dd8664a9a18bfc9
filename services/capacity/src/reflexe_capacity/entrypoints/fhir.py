"""The capacity service's FHIR R4 API under /fhir (docs/integration-fhir.md, "HAD capacity"). It
only translates: a HealthcareService PUT by an HAD goes through the REST API's declare_capacity,
and reads through the same scope checks as GET /v1/hads/{finess} and the department board."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.entrypoints import fhir_mapping as fm
from reflexe_capacity.entrypoints.api import _check_had_scope, _visible_had, declare_capacity
from reflexe_capacity.entrypoints.schemas import DeclarationIn
from reflexe_common.auth import Principal, Role, authenticated, ensure_department, require
from reflexe_common.checks import require_department
from reflexe_common.fhir import FhirInvalid, FhirRoute, base_url, bundle, documented, fhir_response, read_resource

router = APIRouter(prefix="/fhir", route_class=FhirRoute, tags=["FHIR R4"])

_OUTCOME_DESCRIPTIONS = {
    "400": "Not a FHIR R4 HealthcareService, another id than the URL's, or an unsupported search (OperationOutcome)",
    "401": "No token, or a token this service does not trust (OperationOutcome)",
    "403": "The caller's role or scope does not allow this (OperationOutcome)",
    "404": "No HAD of that FINESS in the registry, or no such department (OperationOutcome)",
    "415": "Not application/fhir+json (OperationOutcome)",
    "422": "The declaration breaks the capacity rules; issue.expression names each element (OperationOutcome)",
}
_PUBLISHED = datetime(2026, 11, 26, tzinfo=UTC)  # when this API's capabilities last changed


def _documented(*statuses: str, **options: Any) -> dict[str, Any]:
    return documented(_OUTCOME_DESCRIPTIONS, *statuses, **options)


def _stale_after(request: Request):
    return request.app.state.matcher.policy.stale_after


@router.get("/metadata", summary="CapabilityStatement: what this FHIR server implements", **_documented("403"))
async def metadata(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    issuer = request.app.state.verifier.settings.issuer
    return fhir_response(fm.capability_statement(base_url(request), issuer, _PUBLISHED))


@router.get("/HealthcareService/{finess}", summary="An HAD's offer and live capacity (as GET /v1/hads/{finess})",
            **_documented("403", "404"))
async def read_healthcare_service(finess: str, request: Request,
                                  principal: Principal = Depends(require(Role.HAD, Role.DESK, Role.ARS))) -> JSONResponse:
    async with request.app.state.pool.acquire() as conn:
        await _visible_had(conn, finess, principal)
        had, ledger = await CapacityStore(conn).capacity_view(finess)
    return fhir_response(fm.healthcare_service(had, ledger, datetime.now(UTC), _stale_after(request)))


@router.get("/HealthcareService", summary="Search: the HADs serving a department (as its capacity board)",
            **_documented("400", "403", "404"))
async def search_healthcare_services(request: Request,
                                     principal: Principal = Depends(require(Role.DESK, Role.ARS)),
                                     department: str | None = Query(None, description="INSEE code of the department, e.g. 34")
                                     ) -> JSONResponse:
    unknown = sorted(set(request.query_params) - {"department", "_format"})
    if unknown:
        raise FhirInvalid([(None, f"unsupported search parameter {name!r}") for name in unknown], 400, "not-supported")
    if not department:
        raise FhirInvalid([(None, "search HealthcareServices by department (its INSEE code, e.g. department=34)")],
                          400, "not-supported")
    require_department(department)
    ensure_department(principal, department)
    now = datetime.now(UTC)
    async with request.app.state.pool.acquire() as conn:
        lines = await CapacityStore(conn).board(department)
    stale_after = _stale_after(request)
    return fhir_response(bundle([fm.healthcare_service(had, ledger, now, stale_after) for had, ledger in lines],
                                base_url(request)))


@router.put("/HealthcareService/{finess}", summary="The HAD declares its capacity (as POST /v1/hads/{finess}/capacity)",
            **_documented("400", "403", "404", "415", "422", body=True))
async def update_healthcare_service(finess: str, request: Request,
                                    principal: Principal = Depends(require(Role.HAD))) -> JSONResponse:
    _check_had_scope(principal, finess, set())  # another HAD's body is not even read
    resource = await read_resource(request, "HealthcareService")
    body, origin = fm.declaration_in_from_healthcare_service(resource, finess)
    request.state.fhir_expression_of = lambda field: fm.expression_of(field, origin)
    try:
        declaration = DeclarationIn.model_validate(body)
    except ValidationError as exc:
        raise FhirInvalid([(fm.expression_of(".".join(str(p) for p in e["loc"]), origin), e["msg"])
                           for e in exc.errors()]) from exc
    # The same command as POST /v1/hads/{finess}/capacity; the answer is the capacity after it.
    declared = await declare_capacity(finess, declaration, request, principal, "fhir")
    return fhir_response(fm.healthcare_service(declared.had, declared.ledger, declared.at, _stale_after(request)))
