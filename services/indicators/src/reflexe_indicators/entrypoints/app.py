"""The indicators service's process: a faust agent folds the referral log, an aiokafka consumer
the capacity log, into the facts of every live generation; a replayer rebuilds a fresh
generation from the beginning of the log on demand; the API, the exports and the gauges on
/metrics all read the current generation through service_layer.indicators."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from prometheus_client import Gauge

from reflexe_common.audit import router as audit_router
from reflexe_common.audit import start_writer
from reflexe_common.http import create_app
from reflexe_common.leadership import Leadership
from reflexe_common.logging import configure_logging
from reflexe_common.retention import start_retention
from reflexe_common.service import service_runtime
from reflexe_common.topics import CAPACITY_EVENTS, REFERRAL_EVENTS
from reflexe_indicators.adapters.store import current_generation, ensure_first_generation, generation_schema
from reflexe_indicators.entrypoints.api import router
from reflexe_indicators.service_layer.facts import handler
from reflexe_common.geography import time_zone_of
from reflexe_indicators.service_layer.indicators import (
    AVIS_AFTER_POSTING_COLUMNS, AVIS_COLUMNS, COLUMNS, EVALUATION_COLUMNS, PARIS, RATIOS, Query, compute)
from reflexe_indicators.service_layer.replay import Replayer
from reflexe_indicators.settings import IndicatorsSettings

SCHEMA = "indicators"
GROUP = "reflexe-indicators"
log = logging.getLogger(__name__)
INDICATOR = Gauge("reflexe_indicator", "ARS follow-up indicators of the current day and month, per department "
                  "(the same computation as the API; durations in seconds, shares as ratios 0-1).",
                  ["indicator", "period", "department"])
HAD_ACTIVE_PATIENTS = Gauge("reflexe_had_active_patients", "Patients in care at the HAD today (the indicators' "
                            "active_patients at HAD level; the viability threshold is 50).", ["had"])
GAUGED = [c for c in COLUMNS if "_" not in c or c in RATIOS or c in (
    "referrals_received", "offers_made", "offers_accepted", "offers_declined", "offers_expired", "active_patients",
    "patient_days", "admitted_within_24h", "admissions_in_ehpad", "days_below_viability",
    "admissions_urgent", "admissions_planned", "admitted_on_time", "received_urgent", "received_planned",
    *AVIS_COLUMNS, *AVIS_AFTER_POSTING_COLUMNS, *EVALUATION_COLUMNS)]


def _base_unit(column: str, value: float) -> tuple[str, float]:
    """Prometheus wants base units: the API's durations in minutes are exposed in seconds
    (``admission_median_min`` → ``admission_median_seconds``)."""
    if column.endswith("_min"):
        return column.removesuffix("_min") + "_seconds", value * 60
    return column, value


def clear_gauges(leader: bool) -> None:
    """A replica that does not lead exports none of these gauges: one series per indicator in all."""
    if not leader:
        INDICATOR.clear()
        HAD_ACTIVE_PATIENTS.clear()


async def refresh_gauges(app: FastAPI, every: float, leadership: Leadership) -> None:
    settings = app.state.settings
    leadership.on_change(clear_gauges)
    while True:
        if not leadership.is_leader:
            await asyncio.sleep(every)
            continue
        try:
            now = datetime.now(UTC)
            today = now.astimezone(PARIS).date()
            # Each department's own today and month: overseas, the local day is Paris's day before or after.
            around = (today - timedelta(days=1), today + timedelta(days=1))
            async with app.state.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
                generation = await current_generation(conn)
                for period, label in (("day", lambda d: d.isoformat()), ("month", lambda d: d.isoformat()[:7])):
                    rows = await compute(conn, generation_schema(SCHEMA, generation), Query("department", period, *around),
                                         stale_after=timedelta(minutes=settings.stale_after_minutes), now=now)
                    for row in rows:
                        if row["period"] != label(now.astimezone(time_zone_of(row["key"])).date()):
                            continue
                        for c in GAUGED:
                            if row[c] is not None:
                                name, value = _base_unit(c, row[c])
                                INDICATOR.labels(name, period, row["key"]).set(value)
                # Days after an HAD's own today are not counted: its last row is its today (rows come sorted by day).
                for row in await compute(conn, generation_schema(SCHEMA, generation), Query("had", "day", *around),
                                         stale_after=timedelta(minutes=settings.stale_after_minutes), now=now):
                    if row["active_patients"] is not None:
                        HAD_ACTIVE_PATIENTS.labels(row["key"]).set(row["active_patients"])
        except Exception:
            log.exception("indicator gauges not refreshed")
        clear_gauges(leadership.is_leader)  # leadership lost while refreshing: what was just set goes
        await asyncio.sleep(every)


def build_app(settings: IndicatorsSettings | None = None) -> FastAPI:
    settings = settings or IndicatorsSettings()
    configure_logging("indicators", settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with service_runtime(app, settings, SCHEMA, "reflexe_indicators.migrations") as runtime:
            app.state.settings, app.state.schema = settings, SCHEMA
            await ensure_first_generation(runtime.pool, SCHEMA)
            fold = handler(SCHEMA)
            await runtime.stream(GROUP, [REFERRAL_EVENTS], "indicators-facts", fold)
            await runtime.stream(f"{GROUP}-capacity", [CAPACITY_EVENTS], f"{GROUP}-capacity", fold)
            replayer = Replayer(runtime.pool, runtime.kafka, SCHEMA, GROUP, settings.replay_batch)
            app.state.replayer = replayer
            await replayer.resume()
            runtime.tasks.start("audit-writer", start_writer(app, runtime.pool).run())
            start_retention(runtime.pool, SCHEMA, runtime.tasks.start)
            leadership = Leadership(settings.database_url, SCHEMA, "gauges")
            await leadership.try_once()
            runtime.tasks.start("indicator-gauges-leadership", leadership.run())
            runtime.tasks.start("indicator-gauges", refresh_gauges(app, settings.metrics_refresh_seconds, leadership))
            try:
                yield
            finally:
                await replayer.stop()

    app = create_app("indicators", settings, lifespan, "ARS follow-up indicators computed from the event log.")
    app.include_router(router)
    app.include_router(audit_router)
    return app
