"""The desk page and the desks' live stream.

Browser auth: the desk nurse logs in at the identity provider (OpenID Connect authorization code
with PKCE, /desk/login → the provider's page → /desk/callback). The tokens stay on the server
(adapters/sessions.py) and are refreshed there; the browser holds only an opaque session id in an
HttpOnly, SameSite=Lax cookie scoped to /desk (Secure outside localhost), which authenticates the
page, its fragments, its actions and its event stream (an EventSource cannot send headers).
Logging out ends the session here and at the provider. The page reads the referral and capacity
services and forwards the desk's actions to the referral service server-side, with the desk's own
access token: those services keep deciding what a desk may see and do, and the browser talks to
one origin only (no CORS).

Programs use the bearer endpoints: GET /v1/desks/{d}/stream and GET /v1/desks/{d}/alerts.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from reflexe_common.auth import Principal, Role, ensure_department, require
from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography
from reflexe_common.limits import MAX_PAGE_SIZE
from reflexe_notify.adapters import store
from reflexe_notify.entrypoints import desk_views as views
from reflexe_notify.entrypoints.web_session import (NoSession, PageAuth, check_origin, form, html, problem_fr,
                                                    read_json)
from reflexe_notify.service_layer.desk_stream import DeskStreamHub

COOKIE = "reflexe_desk"
COOKIE_PATH = "/desk"


def _region_of(department: str) -> str | None:
    found = Geography.load().department(department)
    return found.region_code if found else None


PAGE = PageAuth(
    path=COOKIE_PATH, cookie=COOKIE, roles=frozenset({Role.DESK, Role.ADMIN}),
    home=lambda p: f"/desk/{p.department}" if p.role == Role.DESK and p.department else None,
    login_page=views.login_page, forbidden_page=views.forbidden_page,
    wrong_account="Ce compte n’est pas celui d’un bureau de coordination.")
router = APIRouter(tags=["desk"])
router.include_router(PAGE.router())


def _scoped(principal: Principal, department: str) -> None:
    if Geography.load().department(department) is None:
        raise ApiError(404, "UNKNOWN_DEPARTMENT", f"no department {department}")
    ensure_department(principal, department, _region_of)


async def _session_api(request: Request, department: str) -> tuple[Principal, str]:
    """For the page's own calls: 401/403 as problem+json."""
    principal, token = await PAGE.session_api(request)
    _scoped(principal, department)
    return principal, token


# ---------------------------------------------------------------- reading the other services


async def _get(request: Request, url: str, token: str) -> dict[str, Any] | None:
    status, body = await read_json(request, url, token)
    return body if status == 200 and isinstance(body, dict) else None


async def _snapshot(request: Request, department: str, token: str) -> tuple[dict | None, dict | None]:
    settings = request.app.state.settings
    return await asyncio.gather(
        _get(request, f"{settings.capacity_url}/v1/departments/{department}/capacity", token),
        _get(request, f"{settings.referral_url}/v1/departments/{department}/referrals", token),
    )


# ---------------------------------------------------------------- the page


class _PageRefused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _page_session(request: Request, department: str) -> tuple[Principal, str]:
    """Every desk page's prologue: no session → the login page (then back here); another
    department's page → 403."""
    try:
        principal, token = await PAGE.session(request)
    except NoSession:
        raise _PageRefused(RedirectResponse(f"/desk?next={quote(request.url.path)}", status_code=303)) from None
    try:
        _scoped(principal, department)
    except ApiError as exc:
        raise _PageRefused(html(request, views.forbidden_page(
            f"{principal.actor} ne peut pas voir le département {department}."), exc.status)) from None
    return principal, token


def _department_name(department: str) -> str:
    found = Geography.load().department(department)
    return found.name if found else department


@router.get("/desk/{department}", include_in_schema=False)
async def desk_page(department: str, request: Request, msg: str | None = None) -> Response:
    try:
        principal, token = await _page_session(request, department)
    except _PageRefused as refused:
        return refused.response
    pool = request.app.state.pool
    head = await store.desk_head(pool, department)  # read first: the stream resumes from here
    board, queue = await _snapshot(request, department, token)
    alerts = await store.desk_alerts(pool, department, 50)
    neighbours = sorted(Geography.load().neighbours(department))
    return html(request, views.desk_page(department, _department_name(department), principal.actor, board, queue,
                                         alerts, head, neighbours, msg))


# Timeline pages read for one referral page: a referral's history is tens of events, not thousands.
_TIMELINE_PAGES = 20


async def _timeline(request: Request, referral_url: str, token: str) -> list[dict[str, Any]] | None:
    events: list[dict[str, Any]] = []
    offset: int | None = 0
    for _ in range(_TIMELINE_PAGES):
        page = await _get(request, f"{referral_url}/timeline?limit={MAX_PAGE_SIZE}&offset={offset}", token)
        if page is None:
            return None
        events += page.get("events", [])
        offset = page.get("next_offset")
        if offset is None:
            return events
    return events


@router.get("/desk/{department}/referrals/{referral_id}", include_in_schema=False)
async def referral_page(department: str, referral_id: str, request: Request) -> Response:
    """One referral in full: the whole request, the current offer and clocks, the timeline with who
    did what. Read with the desk's own token: the referral service decides what the desk may see."""
    try:
        principal, token = await _page_session(request, department)
    except _PageRefused as refused:
        return refused.response
    settings = request.app.state.settings
    referral_url = f"{settings.referral_url}/v1/referrals/{quote(referral_id, safe='')}"
    (status, referral), events, board = await asyncio.gather(
        read_json(request, referral_url, token), _timeline(request, referral_url, token),
        _get(request, f"{settings.capacity_url}/v1/departments/{department}/capacity", token))
    if status == 0 or status >= 500:
        return html(request, views.unavailable_page(department, "Service indisponible",
                                                    "Le service des demandes ne répond pas ; réessayez dans un instant."),
                    502)
    # Another department's referral is not this page's, even for an admin who may read it.
    if status != 200 or not isinstance(referral, dict) or referral.get("department") != department:
        return html(request, views.unavailable_page(department, "Demande introuvable",
                                                    f"Aucune demande {referral_id} dans le département {department}."),
                    404)
    had_names = {h["finess"]: h.get("name") or h["finess"] for h in (board or {}).get("hads", [])}
    return html(request, views.referral_page(department, _department_name(department), principal.actor, referral,
                                             events, had_names))


@router.get("/desk/{department}/fragments", include_in_schema=False)
async def fragments(department: str, request: Request) -> JSONResponse:
    _, token = await _session_api(request, department)
    head = await store.desk_head(request.app.state.pool, department)
    board, queue = await _snapshot(request, department, token)
    return JSONResponse({"head": head, "queue": views.queue_html(queue, board), "board": views.board_html(board),
                         "referral_options": views._referral_options(queue), "had_options": views._had_options(board)},
                        headers={"Cache-Control": "no-store"})


_ACTIONS = {"offer": "Offre demandée à l’HAD choisie.", "widen": "Recherche élargie.", "close": "Demande clôturée."}


@router.post("/desk/{department}/actions/{action}", include_in_schema=False)
async def desk_action(department: str, action: str, request: Request) -> Response:
    """A desk action from the page, forwarded to the referral service with the desk's token."""
    check_origin(request)
    _, token = await _session_api(request, department)
    if action not in _ACTIONS:
        raise ApiError(404, "UNKNOWN_ACTION", f"no desk action {action}")
    fields = await form(request)
    referral_id = fields.get("referral_id", "")
    if action == "offer":
        body: dict[str, Any] = {"had_finess": fields.get("had_finess", "")}
    elif action == "widen":
        body = {"departments": [d.strip().upper() if d.strip().isalpha() else d.strip()
                                for d in fields.get("departments", "").replace(";", ",").split(",") if d.strip()]}
    else:
        body = {"reason": fields.get("reason", ""), "text": fields.get("text", "")}
    wants_json = "application/json" in request.headers.get("accept", "")
    if not referral_id:
        status, message = 422, "Choisissez d’abord une demande."
    else:
        url = f"{request.app.state.settings.referral_url}/v1/referrals/{quote(referral_id, safe='')}/desk/{action}"
        try:
            answer = await request.app.state.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
            status = answer.status_code
            message = _ACTIONS[action] if status == 200 else problem_fr(answer)
        except httpx.HTTPError:
            status, message = 502, "Le service des demandes ne répond pas : action non transmise, réessayez."
    if wants_json:
        return JSONResponse({"ok": status == 200, "message": message}, status_code=status)
    return RedirectResponse(f"/desk/{department}?msg={quote(message)}", status_code=303)


# ---------------------------------------------------------------- the live stream


def _after(request: Request, after: int | None, head: int) -> int:
    """Where a stream starts: Last-Event-ID (a reconnecting EventSource) over ?after= over now."""
    header = request.headers.get("last-event-id")
    if header:
        try:
            after = int(header)
        except ValueError:
            raise ApiError(422, "INVALID_LAST_EVENT_ID", "Last-Event-ID is a number from this stream") from None
    if after is None:
        return head
    return max(0, min(after, head))  # a number from the future (a reset database) would wait for ever


async def _stream(request: Request, department: str, after: int | None) -> EventSourceResponse:
    hub: DeskStreamHub = request.app.state.desk_hub
    start = _after(request, after, await store.desk_head(request.app.state.pool, department))

    async def events():
        yield ServerSentEvent(comment=f"flux du bureau {department}", retry=1000)
        async for seq, payload in hub.follow(department, start):
            yield ServerSentEvent(payload, event="desk", id=str(seq))

    return EventSourceResponse(events(), ping=15, headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/desk/{department}/stream", include_in_schema=False)
async def desk_stream_cookie(department: str, request: Request,
                             after: int | None = Query(None, ge=0)) -> EventSourceResponse:
    await _session_api(request, department)
    return await _stream(request, department, after)


@router.get("/v1/desks/{department}/stream", summary="The desk's live stream (server-sent events)",
            response_class=EventSourceResponse,
            responses={200: {"description": "Server-sent events, one `desk` event per change",
                             "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            description="Events `desk`, each with an `id`; reconnect with `Last-Event-ID` to resume without a gap. "
                        "`after` starts after a given id (0: from the oldest kept); default: from now.")
async def desk_stream_bearer(department: str, request: Request, after: int | None = Query(None, ge=0),
                             principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> EventSourceResponse:
    _scoped(principal, department)
    return await _stream(request, department, after)


@router.get("/v1/desks/{department}/alerts", summary="The desk's alerts, newest first")
async def desk_alerts(department: str, request: Request, limit: int = Query(50, ge=1, le=500),
                      principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> dict[str, Any]:
    _scoped(principal, department)
    return {"department": department, "alerts": await store.desk_alerts(request.app.state.pool, department, limit)}
