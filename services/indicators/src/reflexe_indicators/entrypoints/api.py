"""Indicator endpoints. Scope: an ARS sees the departments of its region, a desk its department,
an HAD itself (HAD level only), an admin everything. Every figure comes from
service_layer.indicators.compute over the current generation: API, exports and gauges agree."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query as Q, Request
from fastapi.responses import Response

from reflexe_common.auth import Principal, Role, ensure_department, region_of, require
from reflexe_common.checks import is_department, require_department
from reflexe_common.errors import ApiError
from reflexe_common.geography import Geography, time_zone_of
from reflexe_indicators.adapters.store import current_generation, generation_schema
from reflexe_indicators.service_layer.indicators import COLUMNS, Query, compute, next_period

router = APIRouter(prefix="/v1", tags=["indicators"])
MAX_DAYS = 400
EXPORT_LEVELS = ("department", "source", "had")


def scoped_query(principal: Principal, level: str, period: str, start: date, end: date,
                 department: str | None = None) -> Query:
    """The query a caller may run: its scope becomes filters; asking outside it is a 403."""
    if end < start:
        raise ApiError(422, "INVALID_RANGE", "'to' is before 'from'")
    if (end - start).days > MAX_DAYS * (31 if period == "month" else 1):
        raise ApiError(422, "RANGE_TOO_LONG", f"at most {MAX_DAYS} periods per request")
    if department is not None:
        if not is_department(department):
            raise ApiError(422, "UNKNOWN_DEPARTMENT", f"unknown department {department!r}",
                           [{"field": "query.department", "message": f"unknown department {department!r}"}])
        ensure_department(principal, department)
    if principal.role == Role.HAD:
        if level != "had":
            raise ApiError(403, "OUT_OF_SCOPE", f"{principal.actor} may only see its own HAD-level indicators")
        return Query(level, period, start, end, departments=[department] if department else None,
                     hads=[principal.finess or ""])
    if principal.role == Role.DESK:
        if level == "region":
            raise ApiError(403, "OUT_OF_SCOPE", "a desk sees its department, not the region")
        return Query(level, period, start, end, departments=[principal.department or ""])
    if principal.role == Role.ARS:
        departments = [department] if department else [d.code for d in Geography.load().departments_of_region(principal.region or "")]
        return Query(level, period, start, end, departments=departments)
    return Query(level, period, start, end, departments=[department] if department else None)


async def run_query(request: Request, q: Query) -> list[dict[str, Any]]:
    settings = request.app.state.settings
    async with request.app.state.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        generation = await current_generation(conn)
        if generation is None:
            raise ApiError(503, "NOT_READY", "no indicator generation yet")
        rows = await compute(conn, generation_schema(request.app.state.schema, generation), q,
                             stale_after=timedelta(minutes=settings.stale_after_minutes))
    if q.level == "region" and q.departments is not None:
        regions = {region_of(d) for d in q.departments}
        rows = [r for r in rows if r["key"] in regions]
    return rows


@router.get("/indicators", summary="The ARS follow-up indicators per period and level")
async def indicators(request: Request,
                     level: Literal["department", "region", "source", "had"] = "department",
                     period: Literal["day", "month"] = "day",
                     from_: date = Q(..., alias="from"), to: date = Q(...),
                     department: str | None = None,
                     principal: Principal = Depends(require(Role.ARS, Role.DESK, Role.HAD))) -> dict[str, Any]:
    q = scoped_query(principal, level, period, from_, to, department)
    rows = await run_query(request, q)
    return {"level": level, "period": period, "from": from_.isoformat(), "to": to.isoformat(),
            "time_zone": "local time of each department", "columns": ["period", "key", *COLUMNS], "rows": rows}


def _months(month: str | None, from_month: str | None, to_month: str | None) -> tuple[date, date]:
    try:
        first = datetime.strptime(month or from_month or "", "%Y-%m").date()
        last = datetime.strptime(month or to_month or month or from_month or "", "%Y-%m").date()
    except ValueError as exc:
        raise ApiError(422, "INVALID_MONTH", "give month=YYYY-MM, or from_month and to_month") from exc
    return first, next_period(last, "month") - timedelta(days=1)


def _levels_for(principal: Principal) -> tuple[str, ...]:
    return ("had",) if principal.role == Role.HAD else EXPORT_LEVELS


@router.get("/indicators/export.xlsx", summary="Monthly export: one sheet per level, one row per month and key")
async def export_xlsx(request: Request, month: str | None = None, from_month: str | None = None,
                      to_month: str | None = None, department: str | None = None,
                      principal: Principal = Depends(require(Role.ARS, Role.DESK, Role.HAD))) -> Response:
    from openpyxl import Workbook

    start, end = _months(month, from_month, to_month)
    book = Workbook()
    book.remove(book.active)
    for level in _levels_for(principal):
        rows = await run_query(request, scoped_query(principal, level, "month", start, end, department))
        sheet = book.create_sheet(level)
        header = ["period", "key", *COLUMNS]
        sheet.append(header)
        for row in rows:
            sheet.append([row[c] for c in header])
        sheet.freeze_panes = "C2"
    out = io.BytesIO()
    book.save(out)
    name = f"reflexe-indicators-{start:%Y-%m}" + (f"-{end:%Y-%m}" if end.replace(day=1) != start else "")
    return Response(out.getvalue(), media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'})


@router.get("/indicators/export.csv", summary="Monthly export of one level as CSV")
async def export_csv(request: Request, level: Literal["department", "region", "source", "had"] = "department",
                     month: str | None = None, from_month: str | None = None, to_month: str | None = None,
                     department: str | None = None,
                     principal: Principal = Depends(require(Role.ARS, Role.DESK, Role.HAD))) -> Response:
    start, end = _months(month, from_month, to_month)
    rows = await run_query(request, scoped_query(principal, level, "month", start, end, department))
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["period", "key", *COLUMNS]
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if row[c] is None else repr(row[c]) if isinstance(row[c], float) else row[c] for c in header])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="reflexe-indicators-{level}-{start:%Y-%m}.csv"'})


@router.get("/indicators/departments/{department}/daily", summary="One day's referral flow in a department")
async def daily_flow(department: str, request: Request, day: date | None = None,
                     principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> dict[str, Any]:
    """Kept for existing clients; the same figures as GET /v1/indicators (the department's local day)."""
    require_department(department)
    ensure_department(principal, department)
    day = day or datetime.now(UTC).astimezone(time_zone_of(department)).date()
    rows = await run_query(request, Query("department", "day", day, day, departments=[department]))
    row = next((r for r in rows if r["key"] == department), {})
    return {"department": department, "day": day.isoformat(), "referrals_received": row.get("referrals_received", 0),
            "offers": {"made": row.get("offers_made", 0), "accepted": row.get("offers_accepted", 0),
                       "declined": row.get("offers_declined", 0), "expired": row.get("offers_expired", 0)},
            "admissions": row.get("admissions", 0)}


@router.post("/indicators/replay", status_code=202, summary="Rebuild every indicator from the beginning of the log")
async def start_replay(request: Request, principal: Principal = Depends(require())) -> dict[str, Any]:
    progress = await request.app.state.replayer.start()
    if progress is None:
        raise ApiError(409, "REPLAY_RUNNING", "a replay is already building a generation")
    return progress.as_dict()


@router.get("/indicators/replay", summary="Progress of the last replay and the current generation")
async def replay_status(request: Request, principal: Principal = Depends(require())) -> dict[str, Any]:
    replayer = request.app.state.replayer
    async with request.app.state.pool.acquire() as conn:
        current = await current_generation(conn)
        history = [dict(r) for r in await conn.fetch("SELECT * FROM generations ORDER BY generation DESC LIMIT 10")]
    for h in history:
        for k, v in h.items():
            if isinstance(v, datetime):
                h[k] = v.isoformat()
    return {"current_generation": current, "replay": replayer.progress.as_dict() if replayer.progress else None,
            "generations": history}
