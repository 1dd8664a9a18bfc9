"""HTTP endpoints of the referral service: hospitals post referrals, HADs answer offers and
report admissions, desks steer their department's referrals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from reflexe_common import audit
from reflexe_common.auth import Principal, Role, ensure_department, require
from reflexe_common.checks import is_department, require_department
from reflexe_common.errors import ApiError
from reflexe_common.limits import MAX_PAGE_SIZE, Page, pagination
from reflexe_common.geography import Geography
from reflexe_referral.domain.errors import IllegalTransition
from reflexe_referral.domain.model import Referral
from reflexe_referral.entrypoints.schemas import CloseIn, DeclineIn, DeskOfferIn, ReferralIn, WidenIn, referral_view
from reflexe_referral.service_layer.handlers import ConflictingDuplicate, ReferralService, UnknownReferral, request_fingerprint

router = APIRouter(prefix="/v1")
ANYONE_WITH_A_SCOPE = (Role.HOSPITAL, Role.HAD, Role.DESK, Role.ARS)


def _service(request: Request) -> ReferralService:
    return request.app.state.referrals



def _check_can_see(principal: Principal, referral: Referral) -> None:
    """Hospitals see their own referrals, HADs those offered to them, desks and the ARS their area."""
    if principal.role == Role.HOSPITAL and referral.request.source.finess == principal.finess:
        return
    if principal.role == Role.HAD and principal.finess in referral.tried_hads:
        return
    if principal.role in (Role.DESK, Role.ARS, Role.ADMIN):
        ensure_department(principal, referral.department)
        return
    raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see this referral")


async def _act(request: Request, referral_id: uuid.UUID, decide, principal: Principal, action: str) -> dict[str, Any]:
    service = _service(request)
    try:
        def decide_in_scope(referral: Referral):
            audit.about(request, department=referral.department)
            # Checked on the referral the decision loads under its lock: one read, not two.
            _check_scope_for_action(principal, referral, action)
            return decide(referral)

        referral = await service.act(str(referral_id), decide_in_scope, actor=principal.actor, action=action,
                                     subject=principal.subject)
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    except IllegalTransition as exc:
        audit.already_recorded(request)  # by the command's own transaction
        raise ApiError(409, exc.code, exc.message) from exc
    return referral_view(referral)


def _check_scope_for_action(principal: Principal, referral: Referral, action: str) -> None:
    if action.startswith("desk."):
        ensure_department(principal, referral.department)
    elif action == "hospital.cancel":
        if principal.role == Role.HOSPITAL and referral.request.source.finess != principal.finess:
            raise ApiError(403, "OUT_OF_SCOPE", "a hospital may cancel only its own referrals")
        if principal.role == Role.DESK:
            ensure_department(principal, referral.department)
    # HAD actions: the domain refuses an HAD answering an offer made to another (409, NOT_ADDRESSED_TO_CALLER).


@router.post("/referrals", status_code=201, summary="Post a referral (hospital, EHPAD or GP system)")
async def post_referral(body: ReferralIn, request: Request,
                        principal: Principal = Depends(require(Role.HOSPITAL))) -> JSONResponse:
    if principal.role == Role.HOSPITAL and body.source.finess != principal.finess:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may only post referrals as itself (source.finess)")
    commune = Geography.load().commune(body.patient.care_commune)
    if commune is None:
        raise ApiError(422, "UNKNOWN_COMMUNE", "unknown INSEE code",
                       [{"field": "body.patient.care_commune", "message": f"no commune {body.patient.care_commune!r} in the official geographic code"}])
    service = _service(request)
    referral_id = str(body.referral_id or uuid.uuid4())
    domain_request = body.to_domain(commune.department_code, referral_id, service.now())
    problems = domain_request.validate()
    if problems:
        raise ApiError(422, "INVALID_REFERRAL", "the referral breaks domain rules: " + ", ".join(p for p, _ in problems),
                       [{"field": f"body.{path}", "message": message} for path, message in problems])
    try:
        submitted = await service.submit(domain_request, request_fingerprint(domain_request, body.requested_at is not None))
    except ConflictingDuplicate as exc:
        raise ApiError(409, "DUPLICATE_REFERRAL_ID", f"referral {referral_id} exists with a different body") from exc
    return JSONResponse(referral_view(submitted.referral), status_code=201 if submitted.created else 200)


@router.get("/referrals/{referral_id}", summary="One referral's state and clocks")
async def get_referral(referral_id: uuid.UUID, request: Request,
                       principal: Principal = Depends(require(*ANYONE_WITH_A_SCOPE))) -> dict[str, Any]:
    try:
        referral, _ = await _service(request).get(str(referral_id))
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    audit.about(request, department=referral.department)
    _check_can_see(principal, referral)
    audit.record_read(request, principal, referral.department, [str(referral_id)])
    return referral_view(referral)


@router.get("/referrals/{referral_id}/timeline", summary="One referral's events, oldest first")
async def get_timeline(referral_id: uuid.UUID, request: Request,
                       principal: Principal = Depends(require(*ANYONE_WITH_A_SCOPE))) -> dict[str, Any]:
    try:
        referral, events = await _service(request).get(str(referral_id))
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    audit.about(request, department=referral.department)
    _check_can_see(principal, referral)
    audit.record_read(request, principal, referral.department, [str(referral_id)])
    return {"referral_id": str(referral_id), "events": [_event_view(e) for e in events]}


def _event_view(event) -> dict[str, Any]:
    skip = {"referral_id", "occurred_at", "actor", "request"}
    detail = {k: (v.isoformat() if isinstance(v, datetime) else sorted(v) if isinstance(v, (set, frozenset)) else v)
              for k, v in vars(event).items() if k not in skip}
    return {"type": type(event).__name__, "occurred_at": event.occurred_at.isoformat(), "actor": event.actor, **detail}


@router.post("/referrals/{referral_id}/offers/{offer_id}/accept", summary="The HAD accepts the offer made to it")
async def accept(referral_id: uuid.UUID, offer_id: str, request: Request,
                 principal: Principal = Depends(require(Role.HAD))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.accept(offer_id, principal.finess, now), principal, "had.accept")


@router.post("/referrals/{referral_id}/offers/{offer_id}/decline", summary="The HAD declines the offer, with a reason")
async def decline(referral_id: uuid.UUID, offer_id: str, body: DeclineIn, request: Request,
                  principal: Principal = Depends(require(Role.HAD))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.decline(offer_id, principal.finess, body.reason, body.text, now),
                      principal, "had.decline")


@router.post("/referrals/{referral_id}/admission", summary="The HAD reports the patient admitted")
async def admit(referral_id: uuid.UUID, request: Request, principal: Principal = Depends(require(Role.HAD))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.admit(principal.finess, now), principal, "had.admit")


@router.post("/referrals/{referral_id}/discharge", summary="The HAD reports the end of the HAD stay")
async def discharge(referral_id: uuid.UUID, request: Request, principal: Principal = Depends(require(Role.HAD))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.discharge(principal.finess, now), principal, "had.discharge")


@router.post("/referrals/{referral_id}/cancel", summary="Cancel a referral before admission (its hospital or the desk)")
async def cancel(referral_id: uuid.UUID, body: CloseIn, request: Request,
                 principal: Principal = Depends(require(Role.HOSPITAL, Role.DESK))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.cancel(body.reason, body.text, now, actor=principal.actor),
                      principal, "hospital.cancel")


@router.post("/referrals/{referral_id}/desk/offer", summary="Desk: offer the referral to a chosen HAD")
async def desk_offer(referral_id: uuid.UUID, body: DeskOfferIn, request: Request,
                     principal: Principal = Depends(require(Role.DESK))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.desk_offer(body.had_finess, now, actor=principal.actor),
                      principal, "desk.offer")


@router.post("/referrals/{referral_id}/desk/widen", summary="Desk: widen the search to neighbouring departments")
async def desk_widen(referral_id: uuid.UUID, body: WidenIn, request: Request,
                     principal: Principal = Depends(require(Role.DESK))) -> dict[str, Any]:
    unknown = [(i, d) for i, d in enumerate(body.departments) if not is_department(d)]
    if unknown:
        raise ApiError(422, "UNKNOWN_DEPARTMENT", f"unknown departments: {', '.join(d for _, d in unknown)}",
                       [{"field": f"body.departments[{i}]", "message": f"unknown department {d!r}"} for i, d in unknown])
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.widen(body.departments, now, actor=principal.actor),
                      principal, "desk.widen")


@router.post("/referrals/{referral_id}/desk/close", summary="Desk: close the referral with a reason")
async def desk_close(referral_id: uuid.UUID, body: CloseIn, request: Request,
                     principal: Principal = Depends(require(Role.DESK))) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.cancel(body.reason, body.text, now, actor=principal.actor),
                      principal, "desk.close")


@router.get("/departments/{department}/referrals", summary="The open referrals of a department, with their clocks")
async def open_referrals(department: str, request: Request, page: Page = Depends(pagination(MAX_PAGE_SIZE)),
                         principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> dict[str, Any]:
    require_department(department)
    ensure_department(principal, department)
    referrals, next_offset = page.of(await _service(request).open_referrals(department, page.fetch_limit, page.offset))
    audit.record_read(request, principal, department, [r.referral_id for r in referrals])
    now = datetime.now(UTC)
    return {"department": department, "as_of": now.isoformat(), "next_offset": next_offset,
            "referrals": [{**referral_view(r), "waiting_seconds": int((now - r.request.requested_at).total_seconds())}
                          for r in referrals]}
