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
import json
import time
from datetime import timedelta
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sse_starlette import EventSourceResponse, ServerSentEvent

from reflexe_common.auth import Principal, Role, ensure_department, require
from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography
from reflexe_notify.adapters import sessions, store
from reflexe_notify.adapters.oidc import Login, LoginFailed
from reflexe_notify.entrypoints import desk_views as views
from reflexe_notify.service_layer.desk_stream import DeskStreamHub

COOKIE = "reflexe_desk"
LOGIN_COOKIE = "reflexe_login"
# An access token this close to expiry is refreshed before use.
REFRESH_BEFORE_SECONDS = 30
_refresh_locks: dict[str, asyncio.Lock] = {}
COOKIE_PATH = "/desk"
router = APIRouter(tags=["desk"])
_STATIC = {"desk.js": "text/javascript; charset=utf-8", "desk.css": "text/css; charset=utf-8"}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


def _region_of(department: str) -> str | None:
    found = Geography.load().department(department)
    return found.region_code if found else None


class _NoSession(Exception):
    pass


async def _session(request: Request) -> tuple[Principal, str]:
    """The desk behind the session cookie, and its access token (to call the other services as
    itself), refreshed at the provider when it is about to expire."""
    session_id = request.cookies.get(COOKIE)
    found = await sessions.session(request.app.state.pool, session_id) if session_id else None
    if found is None:
        raise _NoSession()
    token = found.access_token
    if found.access_expires_at.timestamp() - time.time() < REFRESH_BEFORE_SECONDS:
        token = await _refreshed(request, found)
    try:
        principal = await request.app.state.verifier.verify(token)
    except ApiError as exc:
        raise _NoSession() from exc
    if principal.role not in (Role.DESK, Role.ADMIN):
        raise _NoSession()
    return principal, token


async def _refreshed(request: Request, found: sessions.PageSession) -> str:
    # One refresh per session at a time: the provider rotates refresh tokens, so a second
    # concurrent refresh with the same token would end the session.
    lock = _refresh_locks.setdefault(found.session_id, asyncio.Lock())
    async with lock:
        current = await sessions.session(request.app.state.pool, found.session_id)
        if current is None or current.refresh_token is None:
            raise _NoSession()
        if current.access_expires_at.timestamp() - time.time() >= REFRESH_BEFORE_SECONDS:
            return current.access_token  # refreshed meanwhile by another request
        try:
            tokens = await request.app.state.oidc.refresh(current.refresh_token)
        except LoginFailed as exc:
            await sessions.close_session(request.app.state.pool, found.session_id)
            raise _NoSession() from exc
        finally:
            _refresh_locks.pop(found.session_id, None)
        await sessions.renew(request.app.state.pool, found.session_id, tokens)
        return tokens.access_token


def _scoped(principal: Principal, department: str) -> None:
    if Geography.load().department(department) is None:
        raise ApiError(404, "UNKNOWN_DEPARTMENT", f"no department {department}")
    ensure_department(principal, department, _region_of)


async def _session_api(request: Request, department: str) -> tuple[Principal, str]:
    """For the page's own calls: 401/403 as problem+json."""
    try:
        principal, token = await _session(request)
    except _NoSession:
        raise ApiError(401, "NO_SESSION", "log in at /desk first") from None
    _scoped(principal, department)
    return principal, token


def _html(request: Request, body: str, status: int = 200) -> HTMLResponse:
    headers = dict(_SECURITY_HEADERS)
    # Logging out posts a form that the server redirects to the provider: form-action must allow it.
    provider = urlsplit(request.app.state.settings.oidc_issuer)
    headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {provider.scheme}://{provider.netloc}")
    if request.url.scheme == "https":
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return HTMLResponse(body, status_code=status, headers=headers)


# ---------------------------------------------------------------- login


@router.get("/desk", include_in_schema=False)
async def login_form(request: Request, next: str = "") -> Response:
    try:
        principal, _ = await _session(request)
        if principal.department and not next:
            return RedirectResponse(f"/desk/{principal.department}", status_code=303)
    except _NoSession:
        pass
    return _html(request, views.login_page(next_path=_local_path(next)))


def _local_path(path: str) -> str:
    """Only a path of the desk pages: never an open redirect to another site."""
    return path if path.startswith("/desk/") and not path.startswith("//") and "\\" not in path else ""


def _base_url(request: Request) -> str:
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


def _is_local(request: Request) -> bool:
    return request.url.hostname in ("localhost", "127.0.0.1", "::1") and not request.app.state.settings.cookie_secure


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form or a JSON object, as a flat dict of strings."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            raise ApiError(400, "INVALID_BODY", "the body is not JSON") from None
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _check_origin(request: Request) -> None:
    """State-changing calls come from this site only (on top of the SameSite cookie)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiError(403, "CROSS_ORIGIN", "cross-site requests are refused")


@router.get("/desk/login", include_in_schema=False)
async def login(request: Request, next: str = "", login_hint: str | None = Query(None, max_length=200)) -> Response:
    """Sends the browser to the provider's login page (authorization code with PKCE)."""
    login = Login.new()
    await sessions.start_login(request.app.state.pool, login, _local_path(next))
    try:
        target = await request.app.state.oidc.authorization_url(login, f"{_base_url(request)}/desk/callback", login_hint)
    except (httpx.HTTPError, LoginFailed):
        return _html(request, views.login_page("Le service d’identification ne répond pas ; réessayez dans un instant."), 503)
    response = RedirectResponse(target, status_code=303)
    # Lax, not Strict: the provider sends the browser back here with a cross-site redirect.
    response.set_cookie(LOGIN_COOKIE, login.state, max_age=int(sessions.LOGIN_TIMEOUT.total_seconds()),
                        path=COOKIE_PATH, httponly=True, samesite="lax", secure=not _is_local(request))
    return response


@router.get("/desk/callback", include_in_schema=False)
async def callback(request: Request, state: str = "", code: str = "", error: str = "") -> Response:
    """The provider's answer: the code becomes tokens kept in a new server-side session."""
    pool = request.app.state.pool
    pending = await sessions.finish_login(pool, state) if state and state == request.cookies.get(LOGIN_COOKIE) else None
    if pending is None or error or not code:
        return _html(request, views.login_page("La connexion n’a pas abouti ou a expiré ; recommencez."), 400)
    login, next_path = pending
    redirect_uri = f"{_base_url(request)}/desk/callback"
    try:
        tokens = await request.app.state.oidc.exchange(code, login, redirect_uri)
        principal = await request.app.state.verifier.verify(tokens.access_token)
    except (LoginFailed, ApiError):
        return _html(request, views.login_page("Le service d’identification a refusé la connexion ; recommencez."), 401)
    if principal.role != Role.DESK or not principal.department:
        return _html(request, views.forbidden_page("Ce compte n’est pas celui d’un bureau de coordination."), 403)
    max_age = timedelta(hours=request.app.state.settings.session_max_hours)
    session_id = await sessions.open_session(pool, principal.subject, tokens, max_age)
    target = f"/desk/{principal.department}"
    if next_path.startswith(target):  # only back to a page of its own department
        target = next_path
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    response.set_cookie(COOKIE, session_id, max_age=int(max_age.total_seconds()), path=COOKIE_PATH, httponly=True,
                        samesite="lax", secure=not _is_local(request))
    return response


@router.post("/desk/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    """Ends the session here, then at the provider (its single sign-on session too)."""
    _check_origin(request)
    session_id = request.cookies.get(COOKIE)
    closed = await sessions.close_session(request.app.state.pool, session_id) if session_id else None
    target = "/desk"
    if closed is not None:
        try:
            target = await request.app.state.oidc.logout_url(closed.id_token, f"{_base_url(request)}/desk") or target
        except (httpx.HTTPError, LoginFailed):
            pass  # the local session is gone; the provider's own session expires by itself
    response = RedirectResponse(target, status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax", secure=not _is_local(request))
    return response


@router.get("/desk/static/{name}", include_in_schema=False)
async def static(name: str) -> Response:
    if name not in _STATIC:
        raise ApiError(404, "NOT_FOUND", f"no {name}")
    text = resources.files("reflexe_notify").joinpath("static", name).read_text(encoding="utf-8")
    return Response(text, media_type=_STATIC[name], headers={"Cache-Control": "no-cache",
                                                              "X-Content-Type-Options": "nosniff"})


# ---------------------------------------------------------------- reading the other services


async def _get(request: Request, url: str, token: str) -> dict[str, Any] | None:
    try:
        response = await request.app.state.http.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


async def _snapshot(request: Request, department: str, token: str) -> tuple[dict | None, dict | None]:
    settings = request.app.state.settings
    return await asyncio.gather(
        _get(request, f"{settings.capacity_url}/v1/departments/{department}/capacity", token),
        _get(request, f"{settings.referral_url}/v1/departments/{department}/referrals", token),
    )


# ---------------------------------------------------------------- the page


@router.get("/desk/{department}", include_in_schema=False)
async def desk_page(department: str, request: Request, msg: str | None = None) -> Response:
    try:
        principal, token = await _session(request)
    except _NoSession:
        return RedirectResponse(f"/desk?next={quote(request.url.path)}", status_code=303)
    try:
        _scoped(principal, department)
    except ApiError as exc:
        return _html(request, views.forbidden_page(f"{principal.actor} ne peut pas voir le département {department}."),
                     exc.status)
    pool = request.app.state.pool
    head = await store.desk_head(pool, department)  # read first: the stream resumes from here
    board, queue = await _snapshot(request, department, token)
    alerts = await store.desk_alerts(pool, department, 50)
    geography = Geography.load()
    found = geography.department(department)
    neighbours = sorted(geography.neighbours(department))
    return _html(request, views.desk_page(department, found.name if found else department, principal.actor, board, queue,
                                 alerts, head, neighbours, msg))


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
    _check_origin(request)
    _, token = await _session_api(request, department)
    if action not in _ACTIONS:
        raise ApiError(404, "UNKNOWN_ACTION", f"no desk action {action}")
    form = await _form(request)
    referral_id = form.get("referral_id", "")
    if action == "offer":
        body: dict[str, Any] = {"had_finess": form.get("had_finess", "")}
    elif action == "widen":
        body = {"departments": [d.strip().upper() if d.strip().isalpha() else d.strip()
                                for d in form.get("departments", "").replace(";", ",").split(",") if d.strip()]}
    else:
        body = {"reason": form.get("reason", ""), "text": form.get("text", "")}
    wants_json = "application/json" in request.headers.get("accept", "")
    if not referral_id:
        status, message = 422, "Choisissez d’abord une demande."
    else:
        url = f"{request.app.state.settings.referral_url}/v1/referrals/{quote(referral_id, safe='')}/desk/{action}"
        try:
            answer = await request.app.state.http.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
            status = answer.status_code
            message = _ACTIONS[action] if status == 200 else _problem_fr(answer)
        except httpx.HTTPError:
            status, message = 502, "Le service des demandes ne répond pas : action non transmise, réessayez."
    if wants_json:
        return JSONResponse({"ok": status == 200, "message": message}, status_code=status)
    return RedirectResponse(f"/desk/{department}?msg={quote(message)}", status_code=303)


def _problem_fr(answer: httpx.Response) -> str:
    try:
        problem = answer.json()
    except ValueError:
        return f"Action refusée (HTTP {answer.status_code})."
    detail = problem.get("detail") or problem.get("title") or ""
    code = problem.get("code") or ""
    return f"Action refusée ({answer.status_code}{' ' + code if code else ''}) : {detail}"


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
