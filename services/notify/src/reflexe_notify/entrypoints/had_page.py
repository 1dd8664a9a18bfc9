"""The HAD's own page: its coordinating nurse decides the offers made to it, declares its capacity,
reports its patients' admission and discharge, and sees what happened lately, live.

Login and session as the desk page's (entrypoints/web_session.py): OpenID Connect with PKCE, the
tokens kept on the server, an opaque session id in an HttpOnly cookie on /had only, and a
session opens these pages only if its token's role is `had`; its FINESS claim is the one page
it may open (403 for any other). The page reads and acts through the referral and capacity
services with the HAD's own access token, so they keep deciding what an HAD sees and may do: the
referrals listed are those the HAD's events named (service_layer/had_stream.py), each read from
the referral service, which answers 404 for one the HAD may no longer see.

Live: the HAD's own server-sent event stream (/had/{f}/stream, resumable with Last-Event-ID);
the page refreshes its regions from /had/{f}/fragments when an entry arrives.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from reflexe_common.auth import Principal, Role
from reflexe_common.errors import ApiError
from reflexe_common.finess import is_finess
from reflexe_common.geography import time_zone_of
from reflexe_notify.adapters import store
from reflexe_notify.entrypoints import had_views as views
from reflexe_notify.entrypoints.web_session import (NoSession, PageAuth, check_origin, form, html, problem_fr,
                                                    read_json)
from reflexe_notify.service_layer import had_stream

PAGE = PageAuth(
    path="/had", cookie="reflexe_had", roles=frozenset({Role.HAD}),
    home=lambda p: f"/had/{p.finess}" if p.role == Role.HAD and p.finess else None,
    login_page=views.login_page, forbidden_page=views.forbidden_page,
    wrong_account="Ce compte n’est pas celui d’une HAD.")
router = APIRouter(tags=["had"])
router.include_router(PAGE.router())


def _scoped(principal: Principal, finess: str) -> None:
    if not is_finess(finess):
        raise ApiError(404, "UNKNOWN_HAD", f"no HAD {finess}")
    if principal.finess != finess:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see HAD {finess}")


async def _session_api(request: Request, finess: str) -> tuple[Principal, str]:
    principal, token = await PAGE.session_api(request)
    _scoped(principal, finess)
    return principal, token


# ---------------------------------------------------------------- reading the other services


async def _referrals(request: Request, finess: str, token: str) -> tuple[list | None, list | None]:
    """(offers to decide, patients accepted or in care); None when the referral service is down."""
    referral_url = request.app.state.settings.referral_url
    ids = await had_stream.concerned_referrals(request.app.state.pool, finess)
    answers = await asyncio.gather(*(read_json(request, f"{referral_url}/v1/referrals/{quote(i, safe='')}", token)
                                     for i in ids))
    if any(status == 0 or status >= 500 for status, _ in answers):
        return None, None
    seen = [body for status, body in answers if status == 200 and isinstance(body, dict)]
    offers = [r for r in seen if r.get("status") == "OFFERED" and (r.get("current_offer") or {}).get("had_finess") == finess]
    offers.sort(key=lambda r: (r["current_offer"].get("hold_until") or ""))  # the hold ending first on top
    patients = [r for r in seen if r.get("status") in ("ACCEPTED", "ADMITTED")]
    patients.sort(key=lambda r: (r.get("status") != "ACCEPTED", r.get("requested_at") or ""))
    return offers, patients


async def _capacity(request: Request, finess: str, token: str) -> tuple[dict | None, dict | None]:
    capacity_url = request.app.state.settings.capacity_url
    (had_status, had), (_, history) = await asyncio.gather(
        read_json(request, f"{capacity_url}/v1/hads/{finess}", token),
        read_json(request, f"{capacity_url}/v1/hads/{finess}/capacity/history?limit=1", token))
    latest = ((history or {}).get("declarations") or [None])[0] if isinstance(history, dict) else None
    return (had if had_status == 200 else None), latest


async def _snapshot(request: Request, finess: str, token: str) -> dict[str, Any]:
    pool = request.app.state.pool
    head = await store.desk_head(pool, had_stream.stream_key(finess))  # read first: the stream resumes from here
    (offers, patients), (had, latest), history = await asyncio.gather(
        _referrals(request, finess, token), _capacity(request, finess, token), had_stream.history(pool, finess))
    department = sorted((had or {}).get("departments") or [None])[0]
    return {"head": head, "offers": offers, "patients": patients, "had": had, "latest": latest, "history": history,
            "department": department}


# ---------------------------------------------------------------- the page


@router.get("/had/{finess}", include_in_schema=False)
async def had_page(finess: str, request: Request) -> Response:
    try:
        principal, token = await PAGE.session(request)
    except NoSession:
        return RedirectResponse(f"/had?next={quote(request.url.path)}", status_code=303)
    try:
        _scoped(principal, finess)
    except ApiError as exc:
        return html(request, views.forbidden_page(f"{principal.actor} ne peut pas voir la page de l’HAD {finess}."),
                    exc.status)
    s = await _snapshot(request, finess, token)
    name = (s["had"] or {}).get("name") or finess
    return html(request, views.had_page(finess, name, principal.actor, s["offers"], s["patients"], s["had"], s["latest"],
                                       s["history"], s["head"], s["department"]))


@router.get("/had/{finess}/fragments", include_in_schema=False)
async def fragments(finess: str, request: Request) -> JSONResponse:
    _, token = await _session_api(request, finess)
    s = await _snapshot(request, finess, token)
    time_zone = time_zone_of(s["department"])
    return JSONResponse({"head": s["head"], "offer_ids": views.offer_ids(s["offers"] or []),
                         "offers": views.offers_html(s["offers"], finess),
                         "patients": views.patients_html(s["patients"], finess),
                         "capacity": views.capacity_html(s["had"], s["latest"], time_zone),
                         "history": views.history_html(s["history"], time_zone)},
                        headers={"Cache-Control": "no-store"})


_ACTIONS = {"accept": "Offre acceptée : le patient est attendu.", "decline": "Offre refusée.",
            "admit": "Admission déclarée.", "discharge": "Sortie déclarée."}


@router.post("/had/{finess}/actions/{action}", include_in_schema=False)
async def had_action(finess: str, action: str, request: Request) -> Response:
    """An answer or a report from the page, forwarded to the referral service with the HAD's token."""
    check_origin(request)
    _, token = await _session_api(request, finess)
    if action not in _ACTIONS:
        raise ApiError(404, "UNKNOWN_ACTION", f"no HAD action {action}")
    fields = await form(request)
    referral_id, offer_id = fields.get("referral_id", ""), fields.get("offer_id", "")
    missing = [name for name in ("referral_id",) + (("offer_id",) if action in ("accept", "decline") else ())
               if not fields.get(name)]
    if action == "decline" and not fields.get("reason"):
        missing.append("reason")
    if missing:
        raise ApiError(422, "MISSING_FIELD", f"missing: {', '.join(missing)}",
                       [{"field": name, "message": "Choisissez un motif." if name == "reason" else "requis"}
                        for name in missing])
    rid = quote(referral_id, safe="")
    path = {"accept": f"/offers/{quote(offer_id, safe='')}/accept", "decline": f"/offers/{quote(offer_id, safe='')}/decline",
            "admit": "/admission", "discharge": "/discharge"}[action]
    body = {"reason": fields.get("reason", ""), "text": fields.get("text", "")} if action == "decline" else None
    url = f"{request.app.state.settings.referral_url}/v1/referrals/{rid}{path}"
    try:
        answer = await request.app.state.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        status = answer.status_code
        message = _ACTIONS[action] if status == 200 else problem_fr(answer)
    except httpx.HTTPError:
        status, message = 502, "Le service des demandes ne répond pas : action non transmise, réessayez."
    return JSONResponse({"ok": status == 200, "message": message}, status_code=status)


@router.post("/had/{finess}/capacity", include_in_schema=False)
async def declare(finess: str, request: Request) -> Response:
    """The HAD's declaration from the page, forwarded to the capacity service with its token."""
    check_origin(request)
    _, token = await _session_api(request, finess)
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
    try:
        answer = await request.app.state.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
        status = answer.status_code
        message = "Capacité déclarée." if status in (200, 201) else problem_fr(answer)
    except httpx.HTTPError:
        status, message = 502, "Le service des capacités ne répond pas : déclaration non transmise, réessayez."
    return JSONResponse({"ok": status in (200, 201), "message": message}, status_code=status)


# ---------------------------------------------------------------- the live stream


@router.get("/had/{finess}/stream", include_in_schema=False)
async def had_stream_cookie(finess: str, request: Request, after: int | None = Query(None, ge=0)) -> EventSourceResponse:
    await _session_api(request, finess)
    key = had_stream.stream_key(finess)
    head = await store.desk_head(request.app.state.pool, key)
    start = head if after is None else max(0, min(after, head))
    header = request.headers.get("last-event-id")
    if header:
        if not header.isdigit():
            raise ApiError(422, "INVALID_LAST_EVENT_ID", "Last-Event-ID is a number from this stream")
        start = min(int(header), head)

    async def events():
        yield ServerSentEvent(comment=f"flux de l'HAD {finess}", retry=1000)
        async for seq, payload in request.app.state.desk_hub.follow(key, start):
            yield ServerSentEvent(payload, event="had", id=str(seq))

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
