"""The desk's pages: its department's queue, HADs and alerts (refreshed by the page's script from
/desk/{d}/fragments when the live stream says something changed), and one referral in full."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from reflexe_common.geography import Geography
from reflexe_common.limits import MAX_PAGE_SIZE
from reflexe_notify.adapters import store
from reflexe_notify.entrypoints.pages import views
from reflexe_notify.entrypoints.pages.rendering import html
from reflexe_notify.entrypoints.pages.session import desk_api_session, desk_page_session
from reflexe_notify.entrypoints.pages.upstream import read_json, read_object

router = APIRouter(tags=["desk"])
# Timeline pages read for one referral page: a referral's history is tens of events, not thousands.
_TIMELINE_PAGES = 20


def _department_name(department: str) -> str:
    found = Geography.load().department(department)
    return found.name if found else department


async def _snapshot(request: Request, department: str, token: str) -> tuple[dict | None, dict | None]:
    """(the HADs' capacity board, the open referrals); each None when its service is down."""
    settings = request.app.state.settings
    return await asyncio.gather(
        read_object(request, f"{settings.capacity_url}/v1/departments/{department}/capacity", token),
        read_object(request, f"{settings.referral_url}/v1/departments/{department}/referrals", token),
    )


@router.get("/desk/{department}", include_in_schema=False)
async def desk_page(department: str, request: Request, msg: str | None = None) -> Response:
    principal, token = await desk_page_session(request, department)
    pool = request.app.state.pool
    head = await store.desk_head(pool, department)  # read first: the stream resumes from here
    board, queue = await _snapshot(request, department, token)
    alerts = await store.desk_alerts(pool, department, 50)
    neighbours = sorted(Geography.load().neighbours(department))
    return html(request, views.desk_page(department, _department_name(department), principal.actor, board, queue,
                                         alerts, head, neighbours, msg))


@router.get("/desk/{department}/fragments", include_in_schema=False)
async def fragments(department: str, request: Request) -> JSONResponse:
    _, token = await desk_api_session(request, department)
    head = await store.desk_head(request.app.state.pool, department)
    board, queue = await _snapshot(request, department, token)
    return JSONResponse({"head": head, **views.desk_fragments(queue, board, department)}, headers={"Cache-Control": "no-store"})


async def _timeline(request: Request, referral_url: str, token: str) -> list[dict[str, Any]] | None:
    events: list[dict[str, Any]] = []
    offset: int | None = 0
    for _ in range(_TIMELINE_PAGES):
        page = await read_object(request, f"{referral_url}/timeline?limit={MAX_PAGE_SIZE}&offset={offset}", token)
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
    principal, token = await desk_page_session(request, department)
    settings = request.app.state.settings
    referral_url = f"{settings.referral_url}/v1/referrals/{quote(referral_id, safe='')}"
    (status, referral), events, board = await asyncio.gather(
        read_json(request, referral_url, token), _timeline(request, referral_url, token),
        read_object(request, f"{settings.capacity_url}/v1/departments/{department}/capacity", token))
    if status == 0 or status >= 500:
        return html(request, views.unavailable_page(department, "Service indisponible",
                                                    "Le service des demandes ne répond pas ; réessayez dans un instant."),
                    502)
    # Another department's referral is not this page's, even for an admin who may read it, unless
    # its search was widened to this department.
    if (status != 200 or not isinstance(referral, dict)
            or department not in {referral.get("department"), *referral.get("departments_searched", [])}):
        return html(request, views.unavailable_page(department, "Demande introuvable",
                                                    f"Aucune demande {referral_id} dans le département {department}."),
                    404)
    had_names = {h["finess"]: h.get("name") or h["finess"] for h in (board or {}).get("hads", [])}
    return html(request, views.referral_page(department, _department_name(department), principal.actor, referral,
                                             events, had_names))
