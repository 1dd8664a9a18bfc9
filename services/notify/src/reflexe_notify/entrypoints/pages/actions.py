"""What the pages' forms do: a desk's actions and an HAD's answers, reports and capacity
declarations, each forwarded to the service that owns the command (the referral or the capacity
service) with the person's own token, so that service decides whether it is allowed. Answered in
JSON for the page's script (a message in French), or, for a desk's form posted without the script,
by going back to the page with the message."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from reflexe_common.auth import Principal
from reflexe_common.errors import ApiError
from reflexe_common.geography import normalise_department_code
from reflexe_notify.entrypoints.pages.session import check_origin, desk_api_session, had_api_session
from reflexe_notify.entrypoints.pages.upstream import forward

router = APIRouter(tags=["pages"])

_REFERRAL_UNREACHABLE = "Le service des demandes ne répond pas : action non transmise, réessayez."
_CAPACITY_UNREACHABLE = "Le service des capacités ne répond pas : déclaration non transmise, réessayez."
_DESK_DONE = {"offer": "Offre demandée à l’HAD choisie.", "widen": "Recherche élargie.", "close": "Demande clôturée."}
_HAD_DONE = {"accept": "Offre acceptée : le patient est attendu.", "decline": "Offre refusée.",
             "accept_pending": "Offre acceptée sous réserve d’évaluation : la place reste réservée.",
             "confirm": "Admission confirmée après évaluation : le patient est attendu.",
             "withdraw": "Acceptation retirée : la place est libérée, la demande va à une autre HAD.",
             "admit": "Admission déclarée.", "discharge": "Sortie déclarée."}
# The answers to an offer (they name it), and those that need a reason.
_ON_OFFER = ("accept", "decline", "accept_pending")
_WITH_REASON = ("decline", "withdraw")


async def form(request: Request) -> dict[str, str]:
    """An urlencoded form or a JSON object, as a flat dict of strings."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "INVALID_BODY", "the body is not JSON") from None
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _answer(status: int, message: str) -> JSONResponse:
    return JSONResponse({"ok": 200 <= status < 300, "message": message}, status_code=status)


async def _from_page(request: Request, opened: Callable[[], Awaitable[tuple[Principal, str]]], action: str,
                     known: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """Every action's prologue: posted from this site, by a session that may act on this page
    (`opened`), an action the page has; its token and fields."""
    check_origin(request)
    _, token = await opened()
    if action not in known:
        raise ApiError(404, "UNKNOWN_ACTION", f"no such action {action}")
    return token, await form(request)


def widened_departments(text: str) -> list[str]:
    """The departments a desk typed to widen a search ("30, 2a; 12"), written as the geography writes them."""
    return [normalise_department_code(d) for d in text.replace(";", ",").split(",") if d.strip()]


@router.post("/desk/{department}/actions/{action}", include_in_schema=False)
async def desk_action(department: str, action: str, request: Request) -> Response:
    """A desk action from the page, forwarded to the referral service with the desk's token."""
    token, fields = await _from_page(request, lambda: desk_api_session(request, department), action, _DESK_DONE)
    referral_id = fields.get("referral_id", "")
    if action == "offer":
        body: dict[str, Any] = {"had_finess": fields.get("had_finess", "")}
    elif action == "widen":
        body = {"departments": widened_departments(fields.get("departments", ""))}
    else:
        body = {"reason": fields.get("reason", ""), "text": fields.get("text", "")}
    if not referral_id:
        status, message = 422, "Choisissez d’abord une demande."
    else:
        url = f"{request.app.state.settings.referral_url}/v1/referrals/{quote(referral_id, safe='')}/desk/{action}"
        status, message = await forward(request, url, token, body, _DESK_DONE[action], _REFERRAL_UNREACHABLE)
    if "application/json" in request.headers.get("accept", ""):
        return _answer(status, message)
    return RedirectResponse(f"/desk/{department}?msg={quote(message)}", status_code=303)


@router.post("/had/{finess}/actions/{action}", include_in_schema=False)
async def had_action(finess: str, action: str, request: Request) -> Response:
    """An answer or a report from the page, forwarded to the referral service with the HAD's token."""
    token, fields = await _from_page(request, lambda: had_api_session(request, finess), action, _HAD_DONE)
    referral_id, offer_id = fields.get("referral_id", ""), fields.get("offer_id", "")
    missing = [name for name in ("referral_id",) + (("offer_id",) if action in _ON_OFFER else ())
               if not fields.get(name)]
    if action in _WITH_REASON and not fields.get("reason"):
        missing.append("reason")
    if missing:
        raise ApiError(422, "MISSING_FIELD", f"missing: {', '.join(missing)}",
                       [{"field": name, "message": "Choisissez un motif." if name == "reason" else "requis"}
                        for name in missing])
    offer = f"/offers/{quote(offer_id, safe='')}"
    path = {"accept": f"{offer}/accept", "decline": f"{offer}/decline",
            "accept_pending": f"{offer}/accept-pending-evaluation", "confirm": "/evaluation/confirm",
            "withdraw": "/evaluation/withdraw", "admit": "/admission", "discharge": "/discharge"}[action]
    body = {"reason": fields.get("reason", ""), "text": fields.get("text", "")} if action in _WITH_REASON else None
    url = f"{request.app.state.settings.referral_url}/v1/referrals/{quote(referral_id, safe='')}{path}"
    return _answer(*await forward(request, url, token, body, _HAD_DONE[action], _REFERRAL_UNREACHABLE))


@router.post("/had/{finess}/capacity", include_in_schema=False)
async def declare(finess: str, request: Request) -> Response:
    """The HAD's declaration from the page, forwarded to the capacity service with its token."""
    check_origin(request)
    _, token = await had_api_session(request, finess)
    fields = await form(request)
    body: dict[str, Any] = {"status": fields.get("status", "")}
    errors = []
    for name in ("places_available", "admissions_possible_today"):
        text = fields.get(name, "").strip()
        if not text.isdigit():
            errors.append({"field": name, "message": "un nombre entier positif ou nul"})
        else:
            body[name] = int(text)
    if errors:
        raise ApiError(422, "INVALID_DECLARATION", "places and admissions are whole numbers", errors)
    url = f"{request.app.state.settings.capacity_url}/v1/hads/{finess}/capacity"
    return _answer(*await forward(request, url, token, body, "Capacité déclarée.", _CAPACITY_UNREACHABLE))
