"""Live capacity gauges, per HAD and department, read from the database (the ledgers the
matcher keeps) rather than counted from LivePlacesChanged events: a restarted or a second
capacity instance exposes the same values, and holds expiring or converting, re-declarations
and registry changes are all reflected. Refreshed every few seconds (first before the service
is ready); a scrape serves the last snapshot.

Labels: ``department`` (a department the HAD serves: an HAD serving two departments has a
series in each, so sum over ``had`` with ``max by (had)`` for a regional total) and ``had``
(its FINESS). Never a referral or a patient id.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_common.metrics import SnapshotGauges

HAD_LABELS = ("department", "had")
GAUGES = SnapshotGauges({
    "reflexe_had_live_places": ("Places an HAD can still offer: declared free places minus the places held "
                                "or taken since the declaration.", HAD_LABELS),
    "reflexe_had_declared_places": ("Free places in the HAD's current capacity declaration (0 without one).",
                                    HAD_LABELS),
    "reflexe_had_authorised_places": ("The HAD's authorised places (its size, from the registry).", HAD_LABELS),
    "reflexe_had_occupancy_ratio": ("Share of the authorised places not free: 1 - live places / authorised "
                                    "places.", HAD_LABELS),
    "reflexe_had_declaration_age_seconds": ("Age of the HAD's current capacity declaration (absent without "
                                            "one).", HAD_LABELS),
    "reflexe_had_declaration_stale": ("1 when the HAD's declaration is older than the stale threshold or "
                                      "missing, else 0.", HAD_LABELS),
    "reflexe_stale_declarations": ("HADs serving the department whose capacity declaration is stale or "
                                   "missing.", ("department",)),
    "reflexe_stale_after_seconds": ("Age after which a capacity declaration is stale (configuration).", ()),
})
REFRESH_SECONDS = 5.0


async def snapshot(pool: asyncpg.Pool, stale_after: timedelta,
                   now: datetime | None = None) -> dict[str, list[tuple[tuple[str, ...], float]]]:
    now = now or datetime.now(UTC)
    samples: dict[str, list[tuple[tuple[str, ...], float]]] = {name: [] for name in (
        "reflexe_had_live_places", "reflexe_had_declared_places", "reflexe_had_authorised_places",
        "reflexe_had_occupancy_ratio", "reflexe_had_declaration_age_seconds", "reflexe_had_declaration_stale",
        "reflexe_stale_declarations")}
    samples["reflexe_stale_after_seconds"] = [((), stale_after.total_seconds())]
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        departments = [r["d"] for r in await conn.fetch("SELECT DISTINCT unnest(departments) AS d FROM hads ORDER BY 1")]
        store = CapacityStore(conn)
        for department in departments:
            stale = 0
            for had, ledger in await store.board(department):
                labels = (department, had.finess)
                live = ledger.live_places()
                declaration = ledger.declaration
                is_stale = ledger.is_stale(now, stale_after)
                stale += is_stale
                samples["reflexe_had_live_places"].append((labels, live))
                samples["reflexe_had_declared_places"].append(
                    (labels, declaration.places_available if declaration else 0))
                samples["reflexe_had_authorised_places"].append((labels, had.authorised_places))
                samples["reflexe_had_occupancy_ratio"].append(
                    (labels, min(1.0, max(0.0, 1 - live / had.authorised_places))))
                if declaration is not None:
                    samples["reflexe_had_declaration_age_seconds"].append(
                        (labels, max(0.0, (now - declaration.declared_at).total_seconds())))
                samples["reflexe_had_declaration_stale"].append((labels, float(is_stale)))
            samples["reflexe_stale_declarations"].append(((department,), stale))
    return samples
