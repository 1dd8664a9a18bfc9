"""Open referrals per department and status, read from the database every few seconds (first
before the service is ready), so the desks' dashboard is right after a restart and with
several referral instances. Labels: department and status only, never a referral id."""

from __future__ import annotations

import asyncpg

from reflexe_common.metrics import SnapshotGauges

OPEN_STATUSES = ("INCOMPLETE", "REQUESTED", "OFFERED", "ACCEPTED", "ESCALATED")
GAUGES = SnapshotGauges({
    "reflexe_open_referrals": ("Referrals not yet admitted nor closed, by status (INCOMPLETE, REQUESTED, OFFERED, "
                               "ACCEPTED, ESCALATED).", ("department", "status")),
    "reflexe_open_referral_max_age_seconds": ("Time since the request of the oldest open referral, by status.",
                                              ("department", "status")),
})
REFRESH_SECONDS = 5.0


class OpenReferrals:
    """Computes the snapshot; departments seen once keep their series (at 0) for the process's life."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._departments: set[str] = set()

    async def snapshot(self) -> dict[str, list[tuple[tuple[str, ...], float]]]:
        rows = await self._pool.fetch(
            "SELECT department, status, count(*) AS n, "
            "EXTRACT(EPOCH FROM now() - min(requested_at))::float8 AS oldest FROM referrals "
            "WHERE status NOT IN ('INELIGIBLE', 'CANCELLED', 'DISCHARGED', 'ADMITTED') GROUP BY 1, 2")
        found = {(r["department"], r["status"]): r for r in rows}
        self._departments |= {r["department"] for r in rows}
        counts, ages = [], []
        for department in sorted(self._departments):
            for status in OPEN_STATUSES:
                row = found.get((department, status))
                counts.append(((department, status), row["n"] if row else 0))
                ages.append(((department, status), max(0.0, row["oldest"]) if row else 0.0))
        return {"reflexe_open_referrals": counts, "reflexe_open_referral_max_age_seconds": ages}
