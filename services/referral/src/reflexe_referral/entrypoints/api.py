"""HTTP endpoints of the referral service: hospitals post referrals, HADs answer offers and
report admissions, desks steer their department's referrals."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from reflexe_common import audit
from reflexe_common.auth import Principal, Role, authenticated, ensure_department, require
from reflexe_common.checks import is_department, require_department
from reflexe_common.errors import ApiError
from reflexe_common.limits import MAX_PAGE_SIZE, Page, pagination
from reflexe_common.openapi import PROBLEM_JSON, PROBLEM_REF
from reflexe_common.vocabulary import Reason
from reflexe_referral.domain import events as ev
from reflexe_referral.domain.errors import IllegalTransition, InvalidRequest, StaleVersion
from reflexe_referral.domain.model import Referral
from reflexe_referral.entrypoints.schemas import (AvisIn, CloseIn, DeclineIn, DeskOfferIn, ReferralIn, RequestUpdateIn,
                                                  WidenIn, had_referral_view, liaison_referral_view, own_explanation,
                                                  referral_view)
from reflexe_referral.service_layer.handlers import (ConflictingDuplicate, NotTheSource, ReferralService, Submitted,
                                                     SubmitReferral, UnknownCommune, UnknownReferral)

router = APIRouter(prefix="/v1")
# Who reads referral rows (birth year, sex, commune): not the ARS, which reads indicators.
ROW_READERS = (Role.HOSPITAL, Role.HAD, Role.DESK)


def reads_rows(*roles: Role):
    """require(*roles), with the ARS told where its figures are rather than a bare ROLE_FORBIDDEN."""
    allowed = require(*roles)

    async def dependency(principal: Principal = Depends(authenticated)) -> Principal:
        if principal.role == Role.ARS:
            raise ApiError(403, "ARS_READS_INDICATORS", "the ARS reads indicators (GET /v1/indicators on the indicators "
                                                        "service) and the capacity board, not referral rows")
        return await allowed(principal)

    return dependency


async def the_had_itself(principal: Principal = Depends(require(Role.HAD))) -> Principal:
    """Answering an offer, reporting an admission or a discharge are the HAD's own acts: an admin
    does not speak for an HAD (it has no FINESS the domain could check)."""
    if principal.role != Role.HAD:
        raise ApiError(403, "ROLE_FORBIDDEN", "only the HAD itself answers offers and reports admissions and discharges")
    return principal


async def the_liaison_itself(principal: Principal = Depends(require(Role.LIAISON))) -> Principal:
    """The avis HAD is a liaison nurse's own clinical opinion, given for her HAD."""
    if principal.role != Role.LIAISON:
        raise ApiError(403, "ROLE_FORBIDDEN", "only a liaison nurse gives the avis HAD")
    return principal


def _service(request: Request) -> ReferralService:
    return request.app.state.referrals



def _may_see(principal: Principal, referral: Referral) -> bool:
    """Hospitals see their own referrals; an HAD one while the current offer is its own or once it
    accepted it (not after declining, nor once its offer expired or went to another); desks their
    department's, and those whose search was widened to their department (they may find the HAD
    among theirs); admins all."""
    if principal.role == Role.ADMIN:
        return True
    if principal.role == Role.HOSPITAL:
        return referral.request.source.finess == principal.finess
    if principal.role == Role.HAD:
        offer = referral.current_offer
        return principal.finess is not None and (
            (offer is not None and offer.had_finess == principal.finess)
            or principal.finess in (referral.accepted_had, referral.admitted_had))
    if principal.role == Role.DESK:
        return principal.department in referral.departments
    return False


def _steers(principal: Principal, referral: Referral) -> bool:
    """A referral is steered (offered, widened, closed) by its own department's desk only: a
    neighbouring desk it was widened to reads it, the desk that asked for help decides."""
    return principal.role != Role.DESK or referral.department == principal.department


def _check_can_see(request: Request, principal: Principal, referral: Referral) -> None:
    if not _may_see(principal, referral):
        raise _hidden(request, principal, referral)


def _hidden(request: Request, principal: Principal, referral: Referral) -> ApiError:
    """The same answer as for a referral that does not exist: its existence is not the caller's to
    know. The audit trail keeps the refusal all the same."""
    audit.record_hidden(request, principal, referral.department, [referral.referral_id])
    return _unknown(referral.referral_id)


def _unknown(referral_id) -> ApiError:
    return ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}")


def _view_for(principal: Principal, referral: Referral) -> dict[str, Any]:
    if principal.role in (Role.HAD, Role.LIAISON):
        return had_referral_view(referral, principal.finess or "")
    return referral_view(referral)


# Events about the search among HADs: an HAD sees only those naming itself.
_SEARCH_EVENTS = (ev.ReferralEscalated, ev.SearchWidened, ev.ReferralDeclaredIneligible)


def _events_for(principal: Principal, events: list) -> list:
    if principal.role != Role.HAD:
        return events
    return [e for e in events if not isinstance(e, _SEARCH_EVENTS)
            and getattr(e, "had_finess", principal.finess) == principal.finess]


async def _act(request: Request, referral_id: uuid.UUID, decide, principal: Principal, action: str) -> dict[str, Any]:
    return _view_for(principal, await _act_on(request, referral_id, decide, principal, action))


async def _act_on(request: Request, referral_id: uuid.UUID, decide, principal: Principal, action: str) -> Referral:
    service = _service(request)
    try:
        def decide_in_scope(referral: Referral):
            audit.about(request, department=referral.department)
            # Checked on the referral the decision loads under its lock: one read, not two.
            _check_scope_for_action(request, principal, referral, action)
            return decide(referral)

        referral = await service.act(str(referral_id), decide_in_scope, actor=principal.actor, action=action,
                                     subject=principal.subject)
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    except StaleVersion as exc:
        audit.already_recorded(request)
        raise ApiError(412, exc.code, exc.message,
                       [{"field": "header.If-Match", "message": f"current version is {exc.current}"}]) from exc
    except IllegalTransition as exc:
        audit.already_recorded(request)  # by the command's own transaction
        raise ApiError(409, exc.code, exc.message) from exc
    return referral


def etag(referral: Referral) -> str:
    return f'"{referral.version}"'


def expected_version(if_match: str | None, field: str = "header.If-Match") -> int:
    """The version an If-Match names: `"7"`, or `W/"7"` (FHIR's weak form; the version is exact all the
    same). Updates are refused without one (428): a blind write could undo what the caller never saw."""
    if if_match is None or not if_match.strip():
        raise ApiError(428, "PRECONDITION_REQUIRED", "send If-Match with the ETag of the version you read",
                       [{"field": field, "message": "required"}])
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise ApiError(422, "INVALID_IF_MATCH", "If-Match must be the ETag of a version, e.g. \"3\"",
                       [{"field": field, "message": f"not a version ETag: {if_match!r}"}])
    return int(value)


async def update_request(request: Request, referral_id: uuid.UUID, body: RequestUpdateIn, version: int,
                         principal: Principal) -> Referral:
    """The one way to update a referral's request over HTTP, REST or FHIR (which translates into a
    RequestUpdateIn). The hospital that posted it, or the desk of its department (which often obtains
    the GP's agreement by phone): the timeline records which."""
    now = _service(request).now()
    return await _act_on(request, referral_id,
                         lambda r: r.update_request(body.updated_conditions(r.request.conditions), version, now,
                                                    principal.actor),
                         principal, "referral.update_request")


def _check_scope_for_action(request: Request, principal: Principal, referral: Referral, action: str) -> None:
    if principal.role == Role.LIAISON:
        # A liaison nurse works for an HAD serving one of the departments the referral is searched in.
        if not set(principal.departments) & set(referral.departments):
            raise _hidden(request, principal, referral)
        return
    if principal.role == Role.HAD:
        # An HAD that was never offered the referral does not know it exists. One that was (its offer
        # since expired, declined or superseded) gets the domain's answer about its own offer (409).
        if principal.finess not in referral.tried_hads:
            raise _hidden(request, principal, referral)
        return
    if not _may_see(principal, referral):
        raise _hidden(request, principal, referral)
    if not _steers(principal, referral):
        raise ApiError(403, "NOT_THE_REFERRAL_DESK", f"referral {referral.referral_id} is steered by the desk of "
                                                     f"department {referral.department}, which widened it to yours")


@router.post("/referrals", status_code=201, summary="Post a referral (hospital, EHPAD or GP system)")
async def post_referral(body: ReferralIn, request: Request,
                        principal: Principal = Depends(require(Role.HOSPITAL))) -> JSONResponse:
    submitted = await submit_referral(body, request, principal)
    return JSONResponse(referral_view(submitted.referral), status_code=201 if submitted.created else 200)


async def submit_referral(body: ReferralIn, request: Request, principal: Principal) -> Submitted:
    """The one way in for a referral over HTTP, REST or FHIR (which translates into a ReferralIn):
    the service layer's submit command, its refusals as 4xx naming the field."""
    service = _service(request)
    now = service.now()
    referral_id = str(body.referral_id or uuid.uuid4())
    # The department is the command's to find from the care commune.
    command = SubmitReferral(body.to_domain("", referral_id, now), stamped_by_client=body.requested_at is not None,
                             submitted_by=principal.finess if principal.role == Role.HOSPITAL else None)
    try:
        return await service.submit(command, now)
    except NotTheSource as exc:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may only post referrals as itself (source.finess)") from exc
    except UnknownCommune as exc:
        raise ApiError(422, "UNKNOWN_COMMUNE", "unknown INSEE code",
                       [{"field": f"body.{exc.field}",
                         "message": f"no commune {exc.insee_code!r} in the official geographic code"}]) from exc
    except InvalidRequest as exc:
        raise ApiError(422, "INVALID_REFERRAL", "the referral breaks domain rules: " + ", ".join(p for p, _ in exc.problems),
                       [{"field": f"body.{path}", "message": message} for path, message in exc.problems]) from exc
    except ConflictingDuplicate as exc:
        raise ApiError(409, "DUPLICATE_REFERRAL_ID", f"referral {referral_id} exists with a different body") from exc


@router.get("/referrals/{referral_id}", summary="One referral: its whole request, its state and clocks (its ETag: the version)",
            description="Every field of the request's data set (`source`, `patient` with a pseudonym and a birth year, "
                        "`clinical`, `conditions`, `avis`, the times), then the state: `status`, `current_offer`, "
                        "`accepted_had`, `admitted_had`, `closed_reason` and the lifecycle's times, `tried_hads`, "
                        "`departments_searched`, `clocks`. For the referral's hospital, the desk of its department "
                        "and admins; an HAD gets it while the offer is its own or once it took the patient, without "
                        "anything about another HAD (docs/security.md).")
async def get_referral(referral_id: uuid.UUID, request: Request, response: Response,
                       principal: Principal = Depends(reads_rows(*ROW_READERS))) -> dict[str, Any]:
    try:
        referral, _ = await _service(request).get(str(referral_id))
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    audit.about(request, department=referral.department)
    _check_can_see(request, principal, referral)
    audit.record_read(request, principal, referral.department, [str(referral_id)])
    response.headers["ETag"] = etag(referral)
    return _view_for(principal, referral)


@router.patch("/referrals/{referral_id}/request",
              summary="Update the request's conditions (consents) before an HAD accepts; If-Match required",
              responses={412: {"description": "If-Match names a version that is no longer current (STALE_VERSION)",
                               "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}},
                         428: {"description": "If-Match is missing (PRECONDITION_REQUIRED)",
                               "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}}}})
async def patch_request(referral_id: uuid.UUID, body: RequestUpdateIn, request: Request,
                        if_match: str | None = Header(None, description='the ETag of the version read, e.g. "3"'),
                        principal: Principal = Depends(require(Role.HOSPITAL, Role.DESK))) -> JSONResponse:
    referral = await update_request(request, referral_id, body, expected_version(if_match), principal)
    return JSONResponse(_view_for(principal, referral), headers={"ETag": etag(referral)})


@router.get("/referrals/{referral_id}/timeline", summary="One referral's events, oldest first",
            description="Each event with its `type`, `occurred_at` and `actor` (`hospital:<finess>`, `ehpad:<finess>`, "
                        "`gp:<finess>`, `had:<finess>`, `desk:<department>` or `system`), then its own fields.")
async def get_timeline(referral_id: uuid.UUID, request: Request, page: Page = Depends(pagination(MAX_PAGE_SIZE)),
                       principal: Principal = Depends(reads_rows(*ROW_READERS))) -> dict[str, Any]:
    try:
        referral, events = await _service(request).get(str(referral_id))
    except UnknownReferral as exc:
        raise ApiError(404, "UNKNOWN_REFERRAL", f"no referral {referral_id}") from exc
    audit.about(request, department=referral.department)
    _check_can_see(request, principal, referral)
    audit.record_read(request, principal, referral.department, [str(referral_id)])
    # The whole history rebuilds the referral; the answer is one page of it.
    shown, next_offset = page.of(_events_for(principal, events)[page.offset:page.offset + page.fetch_limit])
    return {"referral_id": str(referral_id), "next_offset": next_offset, "events": [_event_view(e, principal) for e in shown]}


def _event_view(event, principal: Principal) -> dict[str, Any]:
    skip = {"referral_id", "occurred_at", "actor", "request"}
    if principal.role == Role.HAD:
        skip.add("explanation_json")  # the matcher's figures about every candidate
    detail = {k: (v.isoformat() if isinstance(v, datetime) else sorted(v) if isinstance(v, (set, frozenset)) else v)
              for k, v in vars(event).items() if k not in skip}
    if principal.role == Role.HAD and "explanation" in detail:
        detail["explanation"] = own_explanation(detail["explanation"], principal.finess or "")
    return {"type": type(event).__name__, "occurred_at": event.occurred_at.isoformat(), "actor": event.actor, **detail}


async def accept_offer(request: Request, referral_id: uuid.UUID, offer_id: str, principal: Principal,
                       pending_evaluation: bool = False) -> Referral:
    """The one way an HAD accepts an offer over HTTP, REST or FHIR (a Task `accepted`, with the
    `pending-evaluation` business status when subject to the liaison nurse's visit)."""
    now = _service(request).now()
    action = "had.accept_pending_evaluation" if pending_evaluation else "had.accept"
    return await _act_on(request, referral_id,
                         lambda r: r.accept(offer_id, principal.finess, now, pending_evaluation=pending_evaluation),
                         principal, action)


async def decline_offer(request: Request, referral_id: uuid.UUID, offer_id: str, reason: Reason, text: str,
                        principal: Principal) -> Referral:
    """The one way an HAD declines an offer, REST or FHIR (a Task `rejected` with its statusReason)."""
    now = _service(request).now()
    return await _act_on(request, referral_id, lambda r: r.decline(offer_id, principal.finess, reason, text, now),
                         principal, "had.decline")


async def confirm_pending_evaluation(request: Request, referral_id: uuid.UUID, principal: Principal) -> Referral:
    """The one way an HAD confirms an acceptance given pending evaluation, REST or FHIR."""
    now = _service(request).now()
    return await _act_on(request, referral_id, lambda r: r.confirm_evaluation(principal.finess, now), principal,
                         "had.confirm_evaluation")


async def withdraw_pending_acceptance(request: Request, referral_id: uuid.UUID, reason: Reason, text: str,
                                      principal: Principal) -> Referral:
    """The one way an HAD withdraws an acceptance given pending evaluation, REST or FHIR."""
    now = _service(request).now()
    return await _act_on(request, referral_id,
                         lambda r: r.withdraw_acceptance(principal.finess, reason, text, now),
                         principal, "had.withdraw_acceptance")


@router.post("/referrals/{referral_id}/offers/{offer_id}/accept", summary="The HAD accepts the offer made to it")
async def accept(referral_id: uuid.UUID, offer_id: str, request: Request,
                 principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
    return _view_for(principal, await accept_offer(request, referral_id, offer_id, principal))


@router.post("/referrals/{referral_id}/offers/{offer_id}/decline", summary="The HAD declines the offer, with a reason")
async def decline(referral_id: uuid.UUID, offer_id: str, body: DeclineIn, request: Request,
                  principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
    return _view_for(principal, await decline_offer(request, referral_id, offer_id, body.reason, body.text, principal))


@router.post("/referrals/{referral_id}/offers/{offer_id}/accept-pending-evaluation",
             summary="The HAD accepts the offer subject to its liaison nurse's evaluation visit",
             description="The place stays held (no hold expiry) until the HAD confirms or withdraws; the admission "
                         "waits for the confirmation (409 EVALUATION_PENDING).")
async def accept_pending_evaluation(referral_id: uuid.UUID, offer_id: str, request: Request,
                                    principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
    return _view_for(principal, await accept_offer(request, referral_id, offer_id, principal, pending_evaluation=True))


@router.post("/referrals/{referral_id}/evaluation/confirm",
             summary="The HAD confirms an acceptance given pending evaluation")
async def confirm_evaluation(referral_id: uuid.UUID, request: Request,
                             principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
    return _view_for(principal, await confirm_pending_evaluation(request, referral_id, principal))


@router.post("/referrals/{referral_id}/evaluation/withdraw",
             summary="The HAD withdraws an acceptance given pending evaluation, with a reason",
             description="Its place is released and the referral is offered to the next HAD, as after a decline.")
async def withdraw_acceptance(referral_id: uuid.UUID, body: DeclineIn, request: Request,
                              principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
    return _view_for(principal, await withdraw_pending_acceptance(request, referral_id, body.reason, body.text,
                                                                  principal))


@router.post("/referrals/{referral_id}/avis", summary="A liaison nurse gives or updates the avis HAD",
             description="For a liaison nurse of an HAD serving a department the referral is searched in. An "
                         "unfavourable avis (its `reason` required) closes the referral as INELIGIBLE while the search "
                         "goes on; once an HAD holds a place it is recorded and that HAD declines or withdraws.")
async def give_avis(referral_id: uuid.UUID, body: AvisIn, request: Request,
                    principal: Principal = Depends(the_liaison_itself)) -> dict[str, Any]:
    if not body.eligible and body.reason is None:
        raise ApiError(422, "INVALID_AVIS", "an unfavourable avis needs its reason",
                       [{"field": "body.reason", "message": "required when eligible is false"}])
    now = _service(request).now()
    return await _act(request, referral_id,
                      lambda r: r.give_avis(principal.finess, body.eligible, body.reason, body.text, now),
                      principal, "liaison.avis")


@router.post("/referrals/{referral_id}/admission", summary="The HAD reports the patient admitted")
async def admit(referral_id: uuid.UUID, request: Request, principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
    now = _service(request).now()
    return await _act(request, referral_id, lambda r: r.admit(principal.finess, now), principal, "had.admit")


@router.post("/referrals/{referral_id}/discharge", summary="The HAD reports the end of the HAD stay")
async def discharge(referral_id: uuid.UUID, request: Request, principal: Principal = Depends(the_had_itself)) -> dict[str, Any]:
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
                         principal: Principal = Depends(reads_rows(Role.DESK))) -> dict[str, Any]:
    require_department(department)
    ensure_department(principal, department)
    referrals, next_offset = page.of(await _service(request).open_referrals(department, page.fetch_limit, page.offset))
    audit.record_read(request, principal, department, [r.referral_id for r in referrals])
    now = datetime.now(UTC)
    return {"department": department, "as_of": now.isoformat(), "next_offset": next_offset,
            "referrals": [{**referral_view(r), "waiting_seconds": int((now - r.request.requested_at).total_seconds())}
                          for r in referrals]}


@router.get("/liaison/departments/{department}/referrals",
            summary="A liaison nurse: the open referrals of one of her departments, to give the avis HAD on",
            description="The referrals not yet admitted searched in a department her HAD serves (another department: "
                        "403 OUT_OF_SCOPE), each reduced to what the avis needs: the requesting establishment and unit, "
                        "the pseudonym, care needs, urgency, commune, status, whether a place is held (and by her own "
                        "HAD) and the current avis; no birth year, sex or consents, nothing of another HAD "
                        "(docs/security.md).")
async def liaison_referrals(department: str, request: Request, page: Page = Depends(pagination(MAX_PAGE_SIZE)),
                            principal: Principal = Depends(the_liaison_itself)) -> dict[str, Any]:
    require_department(department)
    if department not in principal.departments:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see or act on department {department}")
    referrals, next_offset = page.of(await _service(request).open_referrals(department, page.fetch_limit, page.offset))
    audit.record_read(request, principal, department, [r.referral_id for r in referrals])
    return {"department": department, "next_offset": next_offset,
            "referrals": [liaison_referral_view(r, principal.finess or "") for r in referrals]}
