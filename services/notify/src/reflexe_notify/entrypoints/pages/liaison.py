"""The liaison nurse's page: the open referrals of the departments her HAD serves, each with what
she needs to give the avis HAD at the bedside, and the form to give or update it.

The referrals are read from the referral service with her own token (GET
/v1/liaison/departments/{d}/referrals: a reduced view, docs/security.md), and her avis is
forwarded to it (POST /v1/referrals/{id}/avis), which decides whether she may give it. The page
has no live stream: an avis is given after a visit, not within seconds; it is reloaded after each
avis and on demand."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from reflexe_common.errors import ApiError
from reflexe_common.limits import MAX_PAGE_SIZE
from reflexe_common.vocabulary import Reason
from reflexe_notify.entrypoints.pages import views
from reflexe_notify.entrypoints.pages.actions import form
from reflexe_notify.entrypoints.pages.rendering import html
from reflexe_notify.entrypoints.pages.session import check_origin, liaison_api_session, liaison_page_session
from reflexe_notify.entrypoints.pages.upstream import forward, read_json

router = APIRouter(tags=["liaison"])

AVIS_GIVEN = "Avis HAD enregistré."
_PAGES = 10  # pages of the referral service's list read for one department
_UNREACHABLE = "Le service des demandes ne répond pas : avis non transmis, réessayez."


async def _department_referrals(request: Request, department: str, token: str) -> list | None:
    """The department's open referrals as she may see them (page after page, up to a bound: a
    department has tens of open referrals, not thousands); None when the referral service is down."""
    url = f"{request.app.state.settings.referral_url}/v1/liaison/departments/{quote(department, safe='')}/referrals"
    referrals: list = []
    offset: int | None = 0
    for _ in range(_PAGES):
        status, body = await read_json(request, f"{url}?limit={MAX_PAGE_SIZE}&offset={offset}", token)
        if status != 200 or not isinstance(body, dict):
            return None
        referrals += body.get("referrals", [])
        offset = body.get("next_offset")
        if offset is None:
            break
    return referrals


@router.get("/liaison/{finess}", include_in_schema=False)
async def liaison_page(finess: str, request: Request, msg: str | None = None) -> Response:
    principal, token = await liaison_page_session(request, finess)
    departments = list(principal.departments)
    lists = await asyncio.gather(*(_department_referrals(request, d, token) for d in departments))
    return html(request, views.liaison_page(finess, principal.actor, dict(zip(departments, lists)), msg))


def avis_body(fields: dict[str, str]) -> dict:
    """The avis the form gave, as the referral service takes it; 422 naming the field when it is not one."""
    errors = []
    if not fields.get("referral_id"):
        errors.append({"field": "referral_id", "message": "requis"})
    eligible = fields.get("eligible", "")
    if eligible not in ("yes", "no"):
        errors.append({"field": "eligible", "message": "Choisissez favorable ou défavorable."})
    reason = fields.get("reason", "")
    if reason and reason not in {r.value for r in Reason}:
        errors.append({"field": "reason", "message": "motif inconnu"})
    elif eligible == "no" and not reason:
        errors.append({"field": "reason", "message": "Un avis défavorable demande son motif."})
    if errors:
        raise ApiError(422, "INVALID_AVIS", "; ".join(e["message"] for e in errors), errors)
    return {"eligible": eligible == "yes", "reason": reason or None, "text": fields.get("text", "")}


@router.post("/liaison/{finess}/avis", include_in_schema=False)
async def give_avis(finess: str, request: Request) -> Response:
    """Her avis from the page, forwarded to the referral service with her own token. Answered in
    JSON when asked for, else by going back to the page with the outcome."""
    check_origin(request)
    _, token = await liaison_api_session(request, finess)
    fields = await form(request)
    wants_json = "application/json" in request.headers.get("accept", "")
    try:
        body = avis_body(fields)
    except ApiError as exc:
        if wants_json:
            raise
        status, message = exc.status, f"Avis non transmis : {exc.message}"
    else:
        url = f"{request.app.state.settings.referral_url}/v1/referrals/{quote(fields['referral_id'], safe='')}/avis"
        status, message = await forward(request, url, token, body, AVIS_GIVEN, _UNREACHABLE)
    if wants_json:
        return JSONResponse({"ok": 200 <= status < 300, "message": message}, status_code=status)
    anchor = f"#avis-{quote(fields.get('referral_id', ''), safe='')}" if 200 <= status < 300 else ""
    return RedirectResponse(f"/liaison/{finess}?msg={quote(message)}{anchor}", status_code=303)
