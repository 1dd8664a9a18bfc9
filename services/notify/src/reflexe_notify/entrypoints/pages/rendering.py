"""How the pages are rendered and served: one Jinja2 environment (autoescaping every value) for
every page and fragment, the security headers of an HTML answer, and the static files."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.responses import Response
from starlette.types import Scope

from reflexe_common.geography import time_zone_of
from reflexe_common.vocabulary import Reason
from reflexe_notify.domain.desk import reason_fr, short
from reflexe_notify.entrypoints.pages import labels

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store",
}


def _stale_last(hads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The HADs of a board: fresh declarations first, then by name."""
    return sorted(hads, key=lambda h: (bool(h.get("stale")), h.get("name") or ""))


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("reflexe_notify", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.do"])
    env.filters.update(
        fr=labels.fr, short=short, mpp=labels.mpp_label, yes_no=labels.yes_no, when=labels.when_fr,
        clock=labels.clock_fr, commune=labels.commune_label, reason=reason_fr, actor=labels.actor_label,
        had_name=labels.had_name, duration=labels.duration_fr, hold=labels.hold_text, due=labels.due_text, since=labels.since_text,
        admission_due=labels.admission_due,
        stale_last=_stale_last, avis=labels.avis_fr, current_avis=labels.current_avis,
        segment=lambda value: quote(str(value), safe=""))
    env.tests["pending_evaluation"] = lambda r: bool(r.get("evaluation_pending"))
    env.globals.update(
        STATUS_FR=labels.STATUS_FR, BOARD_STATUS_FR=labels.BOARD_STATUS_FR, URGENCY_FR=labels.URGENCY_FR, MISSING_FR=labels.MISSING_FR,
        SOURCE_FR=labels.SOURCE_FR, EQUIPMENT_FR=labels.EQUIPMENT_FR, CAPACITY_STATUS_FR=labels.CAPACITY_STATUS_FR,
        PLACE_FR=labels.PLACE_FR, SEX_FR=labels.SEX_FR, CLOCK_FR=labels.CLOCK_FR, LOGIN_FR=labels.LOGIN_FR,
        SCRIPT_LABELS=labels.SCRIPT_LABELS, EVALUATION_PENDING=labels.EVALUATION_PENDING, time_zone_of=time_zone_of,
        REASONS=[r.value for r in Reason])
    return env


TEMPLATES = Jinja2Templates(env=_environment())


def render(template: str, **context: object) -> str:
    """A whole page."""
    return TEMPLATES.get_template(template).render(**context)


def fragment(template: str, macro: str, *args: object) -> Markup:
    """One region of a page, from the same macro the page itself renders it with (the script swaps it in)."""
    return getattr(TEMPLATES.get_template(template).module, macro)(*args)


def now() -> datetime:
    return datetime.now(UTC)


def html(request: Request, body: str, status: int = 200) -> HTMLResponse:
    headers = dict(SECURITY_HEADERS)
    # Logging out posts a form that the server redirects to the provider: form-action must allow it.
    provider = urlsplit(request.app.state.settings.oidc_issuer)
    headers["Content-Security-Policy"] = headers["Content-Security-Policy"].replace(
        "form-action 'self'", f"form-action 'self' {provider.scheme}://{provider.netloc}")
    if request.url.scheme == "https":
        headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return HTMLResponse(body, status_code=status, headers=headers)


class _PageStatic(StaticFiles):
    """The pages' scripts and style sheets; revalidated on each load so a new release is picked up."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_static(app: FastAPI, *page_roots: str) -> None:
    """The same files under each page family's path (/desk/static, /had/static)."""
    files = _PageStatic(packages=[("reflexe_notify", "static")])
    for root in page_roots:
        app.mount(f"{root}/static", files, name=f"{root.strip('/')}-static")
