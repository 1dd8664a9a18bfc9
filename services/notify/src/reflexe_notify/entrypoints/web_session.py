"""What the web pages share: OpenID Connect login (authorization code with PKCE), the server-side
session behind an opaque cookie, its token refreshed at the provider, logout there too, the
security headers, and the pages' static files.

Each page (the desk's under /desk, the HAD's under /had) is a `PageAuth`: its own cookie on its
own path, the roles its sessions may have, and where a logged-in person belongs. A session opened
on one page is refused by another whose roles it lacks (a desk's session id presented under /had
is no session there), on top of the browser never sending one page's cookie to the other's path.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from reflexe_common.auth import Principal, Role
from reflexe_common.errors import ApiError
from reflexe_notify.adapters import sessions
from reflexe_notify.adapters.oidc import Login, LoginFailed

LOGIN_COOKIE = "reflexe_login"
# An access token this close to expiry is refreshed before use.
REFRESH_BEFORE_SECONDS = 30
_refresh_locks: dict[str, asyncio.Lock] = {}
STATIC = {"desk.js": "text/javascript; charset=utf-8", "desk.css": "text/css; charset=utf-8",
          "had.js": "text/javascript; charset=utf-8", "had.css": "text/css; charset=utf-8"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


class NoSession(Exception):
    pass


@dataclass(frozen=True)
class PageAuth:
    """One page family's login and sessions."""

    path: str  # "/desk": the login at {path}, {path}/login, {path}/callback, {path}/logout
    cookie: str
    roles: frozenset[Role]  # a session of another role opens nothing here
    home: Callable[[Principal], str | None]  # the page of a logged-in person; None: not a user of these pages
    login_page: Callable[..., str]  # (error=None, next_path="") -> HTML
    forbidden_page: Callable[[str], str]
    wrong_account: str  # French: the account logged in is not one of these pages'

    # ------------------------------------------------------------ sessions

    async def session(self, request: Request) -> tuple[Principal, str]:
        """The person behind the session cookie, and their access token (to call the other
        services as themselves), refreshed at the provider when it is about to expire."""
        session_id = request.cookies.get(self.cookie)
        found = await sessions.session(request.app.state.pool, session_id) if session_id else None
        if found is None:
            raise NoSession()
        token = found.access_token
        if found.access_expires_at.timestamp() - time.time() < REFRESH_BEFORE_SECONDS:
            token = await _refreshed(request, found)
        try:
            principal = await request.app.state.verifier.verify(token)
        except ApiError as exc:
            raise NoSession() from exc
        if principal.role not in self.roles:
            raise NoSession()
        return principal, token

    async def session_api(self, request: Request) -> tuple[Principal, str]:
        """For the page's own calls (fragments, actions, stream): 401 as problem+json."""
        try:
            return await self.session(request)
        except NoSession:
            raise ApiError(401, "NO_SESSION", f"log in at {self.path} first") from None

    def local_path(self, path: str) -> str:
        """Only a path of these pages: never an open redirect to another site."""
        return path if path.startswith(f"{self.path}/") and not path.startswith("//") and "\\" not in path else ""

    def set_cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        # Lax, not Strict: the provider sends the browser back here with a cross-site redirect.
        response.set_cookie(name, value, max_age=max_age, path=self.path, httponly=True, samesite="lax",
                            secure=not is_local(request))

    # ------------------------------------------------------------ the login routes

    def router(self) -> APIRouter:
        router = APIRouter(tags=[self.path.strip("/")])
        auth = self

        @router.get(self.path, include_in_schema=False)
        async def login_form(request: Request, next: str = "") -> Response:
            try:
                principal, _ = await auth.session(request)
                home = auth.home(principal)
                if home and not next:
                    return RedirectResponse(home, status_code=303)
            except NoSession:
                pass
            return html(request, auth.login_page(next_path=auth.local_path(next)))

        @router.get(f"{self.path}/login", include_in_schema=False)
        async def login(request: Request, next: str = "",
                        login_hint: str | None = Query(None, max_length=200)) -> Response:
            """Sends the browser to the provider's login page (authorization code with PKCE)."""
            attempt = Login.new()
            await sessions.start_login(request.app.state.pool, attempt, auth.local_path(next))
            try:
                target = await request.app.state.oidc.authorization_url(
                    attempt, f"{base_url(request)}{auth.path}/callback", login_hint)
            except (httpx.HTTPError, LoginFailed):
                return html(request, auth.login_page("Le service d’identification ne répond pas ; réessayez dans un "
                                                     "instant."), 503)
            response = RedirectResponse(target, status_code=303)
            auth.set_cookie(request, response, LOGIN_COOKIE, attempt.state, int(sessions.LOGIN_TIMEOUT.total_seconds()))
            return response

        @router.get(f"{self.path}/callback", include_in_schema=False)
        async def callback(request: Request, state: str = "", code: str = "", error: str = "") -> Response:
            """The provider's answer: the code becomes tokens kept in a new server-side session."""
            pool = request.app.state.pool
            pending = (await sessions.finish_login(pool, state)
                       if state and state == request.cookies.get(LOGIN_COOKIE) else None)
            if pending is None or error or not code:
                return html(request, auth.login_page("La connexion n’a pas abouti ou a expiré ; recommencez."), 400)
            attempt, next_path = pending
            try:
                tokens = await request.app.state.oidc.exchange(code, attempt, f"{base_url(request)}{auth.path}/callback")
                principal = await request.app.state.verifier.verify(tokens.access_token)
            except (LoginFailed, ApiError):
                return html(request, auth.login_page("Le service d’identification a refusé la connexion ; "
                                                     "recommencez."), 401)
            home = auth.home(principal)
            if home is None:
                return html(request, auth.forbidden_page(auth.wrong_account), 403)
            max_age = timedelta(hours=request.app.state.settings.session_max_hours)
            session_id = await sessions.open_session(pool, principal.subject, tokens, max_age)
            target = next_path if next_path.startswith(home) else home  # only back to a page of its own
            response = RedirectResponse(target, status_code=303)
            response.delete_cookie(LOGIN_COOKIE, path=auth.path)
            auth.set_cookie(request, response, auth.cookie, session_id, int(max_age.total_seconds()))
            return response

        @router.post(f"{self.path}/logout", include_in_schema=False)
        async def logout(request: Request) -> Response:
            """Ends the session here, then at the provider (its single sign-on session too)."""
            check_origin(request)
            session_id = request.cookies.get(auth.cookie)
            closed = await sessions.close_session(request.app.state.pool, session_id) if session_id else None
            target = auth.path
            if closed is not None:
                try:
                    target = await request.app.state.oidc.logout_url(closed.id_token,
                                                                     f"{base_url(request)}{auth.path}") or target
                except (httpx.HTTPError, LoginFailed):
                    pass  # the local session is gone; the provider's own session expires by itself
            response = RedirectResponse(target, status_code=303)
            response.delete_cookie(auth.cookie, path=auth.path, httponly=True, samesite="lax",
                                   secure=not is_local(request))
            return response

        @router.get(f"{self.path}/static/{{name}}", include_in_schema=False)
        async def static(name: str) -> Response:
            if name not in STATIC:
                raise ApiError(404, "NOT_FOUND", f"no {name}")
            text = resources.files("reflexe_notify").joinpath("static", name).read_text(encoding="utf-8")
            return Response(text, media_type=STATIC[name], headers={"Cache-Control": "no-cache",
                                                                    "X-Content-Type-Options": "nosniff"})

        return router


async def _refreshed(request: Request, found: sessions.PageSession) -> str:
    # One refresh per session at a time: the provider rotates refresh tokens, so a second
    # concurrent refresh with the same token would end the session.
    lock = _refresh_locks.setdefault(found.session_id, asyncio.Lock())
    async with lock:
        current = await sessions.session(request.app.state.pool, found.session_id)
        if current is None or current.refresh_token is None:
            raise NoSession()
        if current.access_expires_at.timestamp() - time.time() >= REFRESH_BEFORE_SECONDS:
            return current.access_token  # refreshed meanwhile by another request
        try:
            tokens = await request.app.state.oidc.refresh(current.refresh_token)
        except LoginFailed as exc:
            await sessions.close_session(request.app.state.pool, found.session_id)
            raise NoSession() from exc
        finally:
            _refresh_locks.pop(found.session_id, None)
        await sessions.renew(request.app.state.pool, found.session_id, tokens)
        return tokens.access_token


# ---------------------------------------------------------------- helpers of every page


async def read_json(request: Request, url: str, token: str) -> tuple[int, Any]:
    """GET another service as the person logged in: (status, body); status 0 when it does not answer."""
    try:
        response = await request.app.state.http.get(url, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError:
        return 0, None
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, None


def html(request: Request, body: str, status: int = 200) -> HTMLResponse:
    headers = dict(SECURITY_HEADERS)
    # Logging out posts a form that the server redirects to the provider: form-action must allow it.
    provider = urlsplit(request.app.state.settings.oidc_issuer)
    headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {provider.scheme}://{provider.netloc}")
    if request.url.scheme == "https":
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return HTMLResponse(body, status_code=status, headers=headers)


def base_url(request: Request) -> str:
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


def is_local(request: Request) -> bool:
    return request.url.hostname in ("localhost", "127.0.0.1", "::1") and not request.app.state.settings.cookie_secure


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


def check_origin(request: Request) -> None:
    """State-changing calls come from this site only (on top of the SameSite cookie)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiError(403, "CROSS_ORIGIN", "cross-site requests are refused")


def problem_fr(answer: httpx.Response) -> str:
    """Another service's refusal, told in French with its code (what the person can act upon)."""
    try:
        problem = answer.json()
    except ValueError:
        return f"Action refusée (HTTP {answer.status_code})."
    detail = problem.get("detail") or problem.get("title") or ""
    code = problem.get("code") or ""
    fields = "; ".join(f"{e.get('field')} : {e.get('message')}" for e in problem.get("errors") or [] if isinstance(e, dict))
    return f"Action refusée ({answer.status_code}{' ' + code if code else ''}) : {detail}" + (f" ({fields})" if fields else "")
