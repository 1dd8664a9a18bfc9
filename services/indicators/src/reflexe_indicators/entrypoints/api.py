"""Indicator endpoints: a desk sees its department, the ARS its region."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request

from reflexe_common.auth import Principal, Role, ensure_department, require
from reflexe_common.geography import Geography

router = APIRouter(prefix="/v1")


def _region_of(department: str) -> str | None:
    found = Geography.load().department(department)
    return found.region_code if found else None


@router.get("/indicators/departments/{department}/daily", summary="One day's referral flow in a department (UTC day)")
async def daily_flow(department: str, request: Request, day: date | None = None,
                     principal: Principal = Depends(require(Role.DESK, Role.ARS))) -> dict[str, Any]:
    ensure_department(principal, department, _region_of)
    day = day or datetime.now(UTC).date()
    start = datetime.combine(day, time.min, UTC)
    end = start + timedelta(days=1)
    async with request.app.state.pool.acquire() as conn:
        referrals = await conn.fetchval(
            "SELECT count(*) FROM referral_facts WHERE department = $1 AND requested_at >= $2 AND requested_at < $3",
            department, start, end)
        offers = await conn.fetchrow(
            "SELECT count(*) AS made, count(*) FILTER (WHERE outcome = 'ACCEPTED') AS accepted, "
            "count(*) FILTER (WHERE outcome = 'DECLINED') AS declined, count(*) FILTER (WHERE outcome = 'EXPIRED') AS expired "
            "FROM offer_facts WHERE department = $1 AND made_at >= $2 AND made_at < $3", department, start, end)
        admissions = await conn.fetchval(
            "SELECT count(*) FROM referral_facts WHERE department = $1 AND admitted_at >= $2 AND admitted_at < $3",
            department, start, end)
    return {"department": department, "day": day.isoformat(), "referrals_received": referrals,
            "offers": dict(offers), "admissions": admissions}
