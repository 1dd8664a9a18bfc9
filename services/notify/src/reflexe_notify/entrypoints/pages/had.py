"""The HAD's own page: its coordinating nurse decides the offers made to it, declares its capacity,
reports its patients' admission and discharge, and sees what happened lately, live (the page's
script refreshes its regions from /had/{f}/fragments when an entry of the HAD's stream arrives).

The referrals listed are those the HAD's events named (service_layer/had_stream.py), each read
from the referral service with the HAD's own token, which answers 404 for one the HAD may no
longer see."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from reflexe_notify.adapters import store
from reflexe_notify.entrypoints.pages import views
from reflexe_notify.entrypoints.pages.rendering import html
from reflexe_notify.entrypoints.pages.session import had_api_session, had_page_session
from reflexe_notify.entrypoints.pages.upstream import read_json
from reflexe_notify.service_layer import had_stream

router = APIRouter(tags=["had"])


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


@router.get("/had/{finess}", include_in_schema=False)
async def had_page(finess: str, request: Request) -> Response:
    principal, token = await had_page_session(request, finess)
    return html(request, views.had_page(finess, principal.actor, await _snapshot(request, finess, token)))


@router.get("/had/{finess}/fragments", include_in_schema=False)
async def fragments(finess: str, request: Request) -> JSONResponse:
    _, token = await had_api_session(request, finess)
    snapshot = await _snapshot(request, finess, token)
    return JSONResponse({"head": snapshot["head"], **views.had_fragments(snapshot, finess)},
                        headers={"Cache-Control": "no-store"})
