"""The desk's and the HADs' web pages, one module per job:

- session.py: logging in (OpenID Connect), the server-side sessions, who may open which page;
- desk.py, had.py: the pages (GETs rendering templates/*.html) and the regions their scripts refresh;
- liaison.py: the liaison nurse's page (the referrals of her HAD's departments) and her avis form;
- actions.py: the pages' forms, forwarded to the referral and capacity services;
- streams.py: the live streams (server-sent events) the pages follow;
- views.py, labels.py, rendering.py: what the templates are given, their French words, the one
  Jinja2 environment; upstream.py: reading and writing the other services as the person logged in.
The static files (static/: page.js shared by every page, desk.js and had.js, the style sheets)
are served under each page family's path."""

from __future__ import annotations

from fastapi import FastAPI, Request, Response

from reflexe_notify.entrypoints.pages import actions, desk, had, liaison, session, streams
from reflexe_notify.entrypoints.pages.rendering import mount_static
from reflexe_notify.entrypoints.pages.session import PageRefused


async def _refused(_: Request, exc: PageRefused) -> Response:
    return exc.response


def include_pages(app: FastAPI) -> None:
    mount_static(app, session.DESK.path, session.HAD.path, session.LIAISON.path)
    # Login routes before the pages': /desk/login is not the page of a department "login".
    for router in (session.router, desk.router, had.router, liaison.router, actions.router, streams.router):
        app.include_router(router)
    app.add_exception_handler(PageRefused, _refused)
