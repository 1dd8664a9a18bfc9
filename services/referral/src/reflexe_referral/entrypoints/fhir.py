"""The referral service's FHIR R4 API under /fhir (docs/integration-fhir.md). It only translates:
a ServiceRequest goes through the REST API's submit_referral and its update through the same
request update, a Task update through the same accept, decline and evaluation commands, and reads
through the same scope checks and audit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from reflexe_common import audit
from reflexe_common.auth import Principal, Role, authenticated, require
from reflexe_common.errors import ApiError
from reflexe_common.fhir import FhirRoute, documented, fhir_response, read_resource
from reflexe_common.privacy import find_direct_identifier
from reflexe_common.vocabulary import Reason
from reflexe_referral.domain.model import Referral
from reflexe_referral.entrypoints import fhir_mapping as fm
from reflexe_referral.entrypoints.api import (ROW_READERS, _check_can_see, _may_see, _service, accept_offer,
                                              confirm_pending_evaluation, decline_offer, expected_version, reads_rows,
                                              submit_referral, the_had_itself, update_request,
                                              withdraw_pending_acceptance)
from reflexe_referral.entrypoints.schemas import ReferralIn, RequestUpdateIn
from reflexe_referral.service_layer.handlers import UnknownReferral

router = APIRouter(prefix="/fhir", route_class=FhirRoute, tags=["FHIR R4"])

_OUTCOME_DESCRIPTIONS = {
    "400": "Not a FHIR R4 resource of the expected type, or an unsupported search or If-None-Exist (OperationOutcome)",
    "401": "No token, or a token this service does not trust (OperationOutcome)",
    "403": "The caller's role or scope does not allow this (OperationOutcome)",
    "404": "Nothing of that id visible to the caller (OperationOutcome)",
    "409": "The referral's state or an earlier request conflicts with this one (OperationOutcome)",
    "412": "If-None-Exist matches several referrals, or If-Match names a version that is no longer current "
           "(OperationOutcome)",
    "415": "Not application/fhir+json (OperationOutcome)",
    "428": "If-Match is missing: an update names the version it was made on (OperationOutcome)",
    "422": "The resource breaks the referral's rules; issue.expression names each element (OperationOutcome)",
}


def _documented(*statuses: str, **options: Any) -> dict[str, Any]:
    return documented(_OUTCOME_DESCRIPTIONS, *statuses, **options)


async def _read_resource(request: Request, resource_type: str) -> dict[str, Any]:
    return await read_resource(request, resource_type)


def _referral_id(value: str, expression: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError) as exc:
        raise fm.FhirInvalid([(expression, "a referral id is a UUID")], status=404, code="not-found") from exc


async def _visible(request: Request, principal: Principal, referral_id: str) -> Referral:
    try:
        referral, _ = await _service(request).get(referral_id)
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    audit.about(request, department=referral.department)
    _check_can_see(request, principal, referral)
    audit.record_read(request, principal, referral.department, [referral_id])
    return referral


def _conditional_ids(if_none_exist: str) -> list[str]:
    """The referral ids an If-None-Exist query names: identifier=<system>|<id>[,<system>|<id>...]."""
    name, _, value = if_none_exist.partition("=")
    if name.strip() != "identifier" or not value:
        raise fm.FhirInvalid([("If-None-Exist", "only identifier=<system>|<referral id> is supported")],
                             status=400, code="not-supported")
    ids = []
    for token in value.split(","):
        system, bar, code = token.partition("|")
        if not bar or system != fm.REFERRAL_ID_SYSTEM:
            raise fm.FhirInvalid([("If-None-Exist", f"identifier=<{fm.REFERRAL_ID_SYSTEM}>|<referral id>")],
                                 status=400, code="not-supported")
        try:
            ids.append(str(uuid.UUID(code)))
        except ValueError as exc:
            raise fm.FhirInvalid([("If-None-Exist", f"{code!r} is not a referral id (a UUID)")], status=400) from exc
    return ids


@router.get("/metadata", summary="CapabilityStatement: what this FHIR server implements", **_documented("403"))
async def metadata(request: Request, principal: Principal = Depends(authenticated)) -> JSONResponse:
    issuer = request.app.state.verifier.settings.issuer
    base = str(request.base_url).rstrip("/") + "/fhir"
    return fhir_response(fm.capability_statement(base, issuer, _PUBLISHED))


_PUBLISHED = datetime(2026, 11, 26, tzinfo=UTC)  # when this API's capabilities last changed


@router.post("/ServiceRequest", summary="Post a referral as a ServiceRequest (conditional create)",
             **_documented("400", "403", "409", "412", "415", "422", created=True, body=True))
async def create_service_request(request: Request, principal: Principal = Depends(require(Role.HOSPITAL))) -> Response:
    resource = await _read_resource(request, "ServiceRequest")
    body, origin = fm.referral_in_from_service_request(resource)
    request.state.fhir_expression_of = lambda field: fm.expression_of(field, origin)
    if if_none_exist := request.headers.get("if-none-exist"):
        ids = _conditional_ids(if_none_exist)
        existing = [r for r in [await _existing(request, principal, i) for i in ids] if r is not None]
        if len(existing) > 1:
            raise fm.FhirInvalid([("If-None-Exist", f"{len(existing)} referrals match")], status=412, code="multiple-matches")
        if body.get("referral_id") is None:
            if len(ids) != 1:
                raise fm.FhirInvalid([("ServiceRequest.identifier", "required when If-None-Exist names several ids")])
            body["referral_id"] = ids[0]
        elif str(body["referral_id"]) not in ids:
            raise fm.FhirInvalid([("ServiceRequest.identifier", "differs from the If-None-Exist identifier")])
    try:
        referral_in = ReferralIn.model_validate(body)
    except ValidationError as exc:
        raise fm.FhirInvalid([(fm.expression_of(".".join(str(p) for p in e["loc"]), origin), e["msg"])
                              for e in exc.errors()]) from exc
    # The same command as POST /v1/referrals: 201 new, 200 the same body again, 409 another body under that id.
    submitted = await submit_referral(referral_in, request, principal)
    referral = submitted.referral
    created = fm.service_request(referral)
    location = f"{str(request.base_url).rstrip('/')}/fhir/ServiceRequest/{referral.referral_id}/_history/{referral.version}"
    return fhir_response(created, 201 if submitted.created else 200,
                         {"Location": location, "ETag": f'W/"{referral.version}"'})


async def _existing(request: Request, principal: Principal, referral_id: str) -> Referral | None:
    """A referral of the caller's under this id (another's is answered as absent, as everywhere)."""
    try:
        referral, _ = await _service(request).get(referral_id)
    except UnknownReferral:
        return None
    return referral if _may_see(principal, referral) else None


@router.get("/ServiceRequest/{referral_id}", summary="One referral as a ServiceRequest", **_documented("403", "404", "422"))
async def read_service_request(referral_id: str, request: Request,
                               principal: Principal = Depends(reads_rows(*ROW_READERS))) -> JSONResponse:
    referral = await _visible(request, principal, _referral_id(referral_id, "ServiceRequest.id"))
    return fhir_response(fm.service_request(referral),
                         headers={"ETag": f'W/"{referral.version}"'})


@router.get("/Task/{referral_id}", summary="One referral's progress as a Task", **_documented("403", "404", "422"))
async def read_task(referral_id: str, request: Request,
                    principal: Principal = Depends(reads_rows(*ROW_READERS))) -> JSONResponse:
    referral = await _visible(request, principal, _referral_id(referral_id, "Task.id"))
    return fhir_response(fm.task(referral), headers={"ETag": f'W/"{referral.version}"'})


@router.get("/Task", summary="Search Tasks: focus=ServiceRequest/{id}, or owner=Organization/{FINESS}&status=requested",
            **_documented("400", "403", "422"))
async def search_tasks(request: Request, principal: Principal = Depends(reads_rows(*ROW_READERS)),
                       focus: str | None = Query(None, description="ServiceRequest/{id}"),
                       owner: str | None = Query(None, description="Organization/{FINESS}, with status=requested"),
                       status: str | None = Query(None, description="requested (with owner)")) -> JSONResponse:
    params = request.query_params
    unknown = sorted(set(params) - {"focus", "owner", "status", "_format"})
    if unknown:
        raise fm.FhirInvalid([(None, f"unsupported search parameter {name!r}") for name in unknown], 400, "not-supported")
    base = str(request.base_url).rstrip("/") + "/fhir"
    if "focus" in params:
        if set(params) - {"focus", "_format"}:
            raise fm.FhirInvalid([(None, "focus is searched alone")], 400, "not-supported")
        focus = params["focus"]
        if not focus.startswith("ServiceRequest/"):
            raise fm.FhirInvalid([(None, "focus=ServiceRequest/{id}")], 400, "not-supported")
        try:
            referral_id = str(uuid.UUID(focus.removeprefix("ServiceRequest/")))
        except ValueError:
            return fhir_response(fm.bundle([], base))
        try:
            referral = await _visible(request, principal, referral_id)
        except ApiError as exc:
            if exc.status != 404:
                raise
            return fhir_response(fm.bundle([], base))  # none of the caller's: an empty result, as a search should
        return fhir_response(fm.bundle([fm.task(referral)], base))
    if "owner" in params:
        if params.get("status") != "requested":
            raise fm.FhirInvalid([(None, "owner is searched with status=requested (the offers awaiting an answer)")],
                                 400, "not-supported")
        finess = params["owner"].removeprefix("Organization/")
        if principal.role == Role.HAD and finess != principal.finess:
            raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may only search its own Tasks")
        if principal.role not in (Role.HAD, Role.ADMIN, Role.DESK):
            raise ApiError(403, "ROLE_FORBIDDEN", "an HAD's offers are for the HAD, its desk and admins")
        referrals = [r for r in await _service(request).offered_to(finess) if _may_see(principal, r)]
        audit.record_read(request, principal, None, [r.referral_id for r in referrals])
        return fhir_response(fm.bundle([fm.task(r) for r in referrals], base))
    raise fm.FhirInvalid([(None, "search Tasks by focus, or by owner with status=requested")], 400, "not-supported")


@router.put("/Task/{referral_id}",
            summary="The HAD answers its offer (status accepted, or rejected with a statusReason), or the evaluation "
                    "steps of an acceptance (businessStatus pending-evaluation, evaluation-confirmed, "
                    "evaluation-withdrawn)",
            **_documented("400", "403", "404", "409", "415", "422", body=True))
async def update_task(referral_id: str, request: Request, principal: Principal = Depends(the_had_itself)) -> JSONResponse:
    referral_id = _referral_id(referral_id, "Task.id")
    resource = await _read_resource(request, "Task")
    if not isinstance(resource, dict) or resource.get("resourceType") != "Task":
        raise fm.FhirInvalid([("Task", "the body must be a Task resource")], 400, "structure")
    _check_task_structure(resource)
    if resource.get("id") != referral_id:
        raise fm.FhirInvalid([("Task.id", "must be the id in the URL")], 400)
    answer = fm.task_answer(resource)
    offer_id = fm.offer_id_of(resource)
    if answer.answers_an_offer and not offer_id:
        raise fm.FhirInvalid([("Task.input", f"the offer answered: input of type {fm.TASK_INPUT_SYSTEM}|{fm.OFFER_INPUT}, "
                                             "as read from the Task")])
    key = uuid.UUID(referral_id)
    # Each form is the REST command of the same name (entrypoints/api.py): one path whatever the door.
    match answer:
        case fm.TaskAnswer.ACCEPT | fm.TaskAnswer.ACCEPT_PENDING_EVALUATION:
            referral = await accept_offer(request, key, offer_id, principal,
                                          pending_evaluation=answer is fm.TaskAnswer.ACCEPT_PENDING_EVALUATION)
            return fhir_response(fm.task(referral))
        case fm.TaskAnswer.CONFIRM_EVALUATION:
            referral = await confirm_pending_evaluation(request, key, principal)
            return fhir_response(fm.task(referral))
        case fm.TaskAnswer.DECLINE:
            reason, text = _decline_reason(resource)
            referral = await decline_offer(request, key, offer_id, reason, text, principal)
            # The HAD's own answer: the referral itself went back to the search, which is not the HAD's to see.
            return fhir_response(fm.task(referral, principal.finess, (reason, text)))
        case fm.TaskAnswer.WITHDRAW_ACCEPTANCE:
            reason, text = _decline_reason(resource)
            referral = await withdraw_pending_acceptance(request, key, reason, text, principal)
            return fhir_response(fm.task(referral, principal.finess, (reason, text), fm.EVALUATION_WITHDRAWN))


@router.put("/ServiceRequest/{referral_id}",
            summary="Update a referral's consents (its hospital or its department's desk); If-Match: W/\"<versionId>\"",
            **_documented("400", "403", "404", "409", "412", "415", "422", "428", body=True))
async def update_service_request(referral_id: str, request: Request,
                                 principal: Principal = Depends(require(Role.HOSPITAL, Role.DESK))) -> JSONResponse:
    referral_id = _referral_id(referral_id, "ServiceRequest.id")
    request.state.fhir_expression_of = lambda field: "If-Match" if field == "header.If-Match" else "ServiceRequest"
    version = expected_version(request.headers.get("if-match"))
    resource = await _read_resource(request, "ServiceRequest")
    if isinstance(resource, dict) and resource.get("id") != referral_id:
        raise fm.FhirInvalid([("ServiceRequest.id", "must be the id in the URL")], 400)
    try:  # what the caller's update is compared with: read under the same scope rule as the command's
        current, _ = await _service(request).get(referral_id)
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    audit.about(request, department=current.department)
    _check_can_see(request, principal, current)
    if current.version != version:  # compared with what the caller read; the command checks it again under its lock
        raise ApiError(412, "STALE_VERSION", f"version {version} is not the current one",
                       [{"field": "header.If-Match", "message": f"current version is {current.version}"}])
    update = RequestUpdateIn.model_validate(fm.request_update_from_service_request(resource, current))
    # The same command as PATCH /v1/referrals/{id}/request.
    referral = await update_request(request, uuid.UUID(referral_id), update, version, principal)
    return fhir_response(fm.service_request(referral), headers={"ETag": f'W/"{referral.version}"'})


def _check_task_structure(resource: dict[str, Any]) -> None:
    from fhir.resources.R4B.task import Task

    try:
        Task.model_validate(resource)
    except ValidationError as exc:
        raise fm.FhirInvalid([("Task." + ".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()],
                             400, "structure") from exc


def _decline_reason(resource: dict[str, Any]) -> tuple[Reason, str]:
    status_reason = resource.get("statusReason") or {}
    codes = [c.get("code") for c in status_reason.get("coding") or [] if c.get("system") == fm.REASON_SYSTEM]
    if len(codes) != 1 or codes[0] not in Reason.__members__.values():
        raise fm.FhirInvalid([("Task.statusReason", f"one coding of {fm.REASON_SYSTEM}: "
                                                    + ", ".join(r.value for r in Reason))])
    text = status_reason.get("text") or ""
    if len(text) > 2000:
        raise fm.FhirInvalid([("Task.statusReason.text", "at most 2000 characters")])
    if found := find_direct_identifier(text):
        raise fm.FhirInvalid([("Task.statusReason.text", f"free text must not contain what looks like {found}")])
    return Reason(codes[0]), text


async def _reload(request: Request, referral_id: str) -> Referral:
    referral, _ = await _service(request).get(referral_id)
    return referral
