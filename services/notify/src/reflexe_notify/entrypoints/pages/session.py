"""Logging in to the pages and their sessions: OpenID Connect login (authorization code with
PKCE), the server-side session behind an opaque cookie, its token refreshed at the provider,
logout there too; and who may open which page (a desk its department's, an HAD its own, a liaison
nurse her HAD's liaison page).

Each page family (the desk's under /desk, the HAD's under /had) is a `PageAuth`: its own cookie on
its own path, the roles its sessions may have, and where a logged-in person belongs. A session
opened on one page is refused by another whose roles it lacks (a desk's session id presented
under /had is no session there), on top of the browser never sending one page's cookie to the
other's path. The tokens stay on the server (adapters/sessions.py); the cookie is HttpOnly,
SameSite=Lax (Secure outside localhost) and authenticates the page, its fragments, its actions
and its event stream (an EventSource cannot send headers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit

import httpx
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from reflexe_common.auth import Principal, Role, ensure_department
from reflexe_common.errors import ApiError
from reflexe_common.finess import is_finess
from reflexe_common.geography import Geography
from reflexe_notify.adapters import sessions
from reflexe_notify.adapters.oidc import Login, LoginFailed
from reflexe_notify.entrypoints.pages import views
from reflexe_notify.entrypoints.pages.labels import LOGIN_FR
from reflexe_notify.entrypoints.pages.rendering import html

LOGIN_COOKIE = "reflexe_login"
# An access token this close to expiry is refreshed before use.
REFRESH_BEFORE_SECONDS = 30
_refresh_locks: dict[str, asyncio.Lock] = {}


class NoSession(Exception):
    pass


class PageRefused(Exception):
    """A page that is not shown: the login page instead (no session), or a refusal (not this
    person's page). Answered as it is (the pages' exception handler)."""

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(frozen=True)
class PageAuth:
    """One page family's login and sessions."""

    family: str  # "desk": the login at /desk, /desk/login, /desk/callback, /desk/logout
    cookie: str
    roles: frozenset[Role]  # a session of another role opens nothing here
    home: Callable[[Principal], str | None]  # the page of a logged-in person; None: not a user of these pages
    # The families whose users may log in here by mistake and are sent to their own login (an HAD's
    # liaison nurse at the HAD's page); anyone else of another family is refused.
    sibling_families: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        return f"/{self.family}"

    def login_page(self, error: str | None = None, next_path: str = "") -> str:
        return views.login_page(self.family, error, next_path)

    def forbidden_page(self, message: str) -> str:
        return views.forbidden_page(self.family, message)

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

    async def open_page(self, request: Request, check: Callable[[Principal], None],
                        refusal: Callable[[Principal], str]) -> tuple[Principal, str]:
        """Every page's prologue: no session → the login page (then back here); `check` refusing
        the person → 403 with the `refusal` in words."""
        try:
            principal, token = await self.session(request)
        except NoSession:
            raise PageRefused(RedirectResponse(f"{self.path}?next={quote(request.url.path)}", status_code=303)) from None
        try:
            check(principal)
        except ApiError as exc:
            raise PageRefused(html(request, self.forbidden_page(refusal(principal)), exc.status)) from None
        return principal, token

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
                # A liaison nurse logging in at the HAD's page (or its nurse at hers) is sent to her own,
                # whose login passes through the provider's single sign-on without asking again.
                other = next((f for f in FAMILIES if f.family in auth.sibling_families and f.home(principal)), None)
                if other is not None:
                    response = RedirectResponse(f"{other.path}/login", status_code=303)
                    response.delete_cookie(LOGIN_COOKIE, path=auth.path)
                    return response
                return html(request, auth.forbidden_page(LOGIN_FR[auth.family]["wrong_account"]), 403)
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


def base_url(request: Request) -> str:
    return (request.app.state.settings.public_url or str(request.base_url)).rstrip("/")


def is_local(request: Request) -> bool:
    return request.url.hostname in ("localhost", "127.0.0.1", "::1") and not request.app.state.settings.cookie_secure


def check_origin(request: Request) -> None:
    """State-changing calls come from this site only (on top of the SameSite cookie)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise ApiError(403, "CROSS_ORIGIN", "cross-site requests are refused")


# ---------------------------------------------------------------- who may open which page

DESK = PageAuth(family="desk", cookie="reflexe_desk", roles=frozenset({Role.DESK, Role.ADMIN}),
                home=lambda p: f"/desk/{p.department}" if p.role == Role.DESK and p.department else None)
HAD = PageAuth(family="had", cookie="reflexe_had", roles=frozenset({Role.HAD}),
               home=lambda p: f"/had/{p.finess}" if p.role == Role.HAD and p.finess else None,
               sibling_families=("liaison",))
# An HAD's liaison nurse: the open referrals of the departments her HAD serves, to give the avis on.
LIAISON = PageAuth(family="liaison", cookie="reflexe_liaison", roles=frozenset({Role.LIAISON}),
                   home=lambda p: f"/liaison/{p.finess}" if p.role == Role.LIAISON and p.finess else None,
                   sibling_families=("had",))
FAMILIES = (DESK, HAD, LIAISON)


def desk_scope(principal: Principal, department: str) -> None:
    """A desk sees its own department (the ARS its region's, an admin all)."""
    if Geography.load().department(department) is None:
        raise ApiError(404, "UNKNOWN_DEPARTMENT", f"no department {department}")
    ensure_department(principal, department)


def had_scope(principal: Principal, finess: str) -> None:
    """An HAD sees its own page only."""
    if not is_finess(finess):
        raise ApiError(404, "UNKNOWN_HAD", f"no HAD {finess}")
    if principal.finess != finess:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see HAD {finess}")


def liaison_scope(principal: Principal, finess: str) -> None:
    """A liaison nurse sees her own HAD's page only."""
    if not is_finess(finess):
        raise ApiError(404, "UNKNOWN_HAD", f"no HAD {finess}")
    if principal.finess != finess:
        raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may not see the liaison page of HAD {finess}")


async def desk_page_session(request: Request, department: str) -> tuple[Principal, str]:
    return await DESK.open_page(request, lambda p: desk_scope(p, department),
                                lambda p: f"{p.actor} ne peut pas voir le département {department}.")


async def had_page_session(request: Request, finess: str) -> tuple[Principal, str]:
    return await HAD.open_page(request, lambda p: had_scope(p, finess),
                               lambda p: f"{p.actor} ne peut pas voir la page de l’HAD {finess}.")


async def liaison_page_session(request: Request, finess: str) -> tuple[Principal, str]:
    return await LIAISON.open_page(request, lambda p: liaison_scope(p, finess),
                                   lambda p: f"{p.actor} ne peut pas voir la page de liaison de l’HAD {finess}.")


async def liaison_api_session(request: Request, finess: str) -> tuple[Principal, str]:
    """For the liaison page's form: 401/403 as problem+json."""
    principal, token = await LIAISON.session_api(request)
    liaison_scope(principal, finess)
    return principal, token


async def desk_api_session(request: Request, department: str) -> tuple[Principal, str]:
    """For the desk page's own calls (fragments, actions, stream): 401/403 as problem+json."""
    principal, token = await DESK.session_api(request)
    desk_scope(principal, department)
    return principal, token


async def had_api_session(request: Request, finess: str) -> tuple[Principal, str]:
    """For the HAD page's own calls (fragments, actions, stream): 401/403 as problem+json."""
    principal, token = await HAD.session_api(request)
    had_scope(principal, finess)
    return principal, token


router = APIRouter()
router.include_router(DESK.router())
router.include_router(HAD.router())
router.include_router(LIAISON.router())
