"""The capacity service's process: registry and declarations API, the matcher (faust), the
declarations consumer, and the outbox relay."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from reflexe_capacity.entrypoints.api import router
from reflexe_capacity.adapters.owned_ledgers import OwnedLedgers
from reflexe_capacity.entrypoints.consumers import declaration_handler, referral_events_handler
from reflexe_capacity.entrypoints.fhir import router as fhir_router
from reflexe_capacity.metrics import GAUGES, REFRESH_SECONDS, snapshot
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy
from reflexe_capacity.settings import CapacitySettings
from reflexe_common.audit import router as audit_router
from reflexe_common.audit import start_writer
from reflexe_common.http import create_app
from reflexe_common.leadership import lead_and_export
from reflexe_common.logging import configure_logging
from reflexe_common.retention import start_retention
from reflexe_common.service import service_runtime
from reflexe_common.topics import INBOUND_CAPACITY, REFERRAL_EVENTS

SCHEMA = "capacity"
MATCHER_GROUP = "reflexe-matcher"


def policy_from(settings: CapacitySettings) -> MatcherPolicy:
    return MatcherPolicy(
        hold_within_24h=timedelta(minutes=settings.hold_minutes_within_24h),
        hold_planned=timedelta(minutes=settings.hold_minutes_planned),
        stale_after=timedelta(minutes=settings.stale_after_minutes),
    )


def build_app(settings: CapacitySettings | None = None) -> FastAPI:
    settings = settings or CapacitySettings()
    configure_logging("capacity", settings.log_level)
    matcher = Matcher(policy_from(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with service_runtime(app, settings, SCHEMA, "reflexe_capacity.migrations", pool_size=20) as runtime:
            app.state.matcher = matcher
            runtime.tasks.start("audit-writer", start_writer(app, runtime.pool).run())
            start_retention(runtime.pool, SCHEMA, runtime.tasks.start)
            # Capacity gauges from the database: right from the first scrape, after a restart too,
            # exported by one replica only (the leader): summed over two they would count twice.
            stale_after = timedelta(minutes=settings.stale_after_minutes)
            await lead_and_export(GAUGES, lambda: snapshot(runtime.pool, stale_after), REFRESH_SECONDS,
                                  settings.database_url, SCHEMA, runtime.tasks.start)
            runtime.relay_outbox()
            runtime.consume_inbound("capacity-declarations", INBOUND_CAPACITY, declaration_handler(matcher))
            # The matcher: a faust agent following the referral log, its state in PostgreSQL, the
            # single writer of its partitions' HAD ledgers (kept in memory, fenced by an epoch).
            await runtime.stream(MATCHER_GROUP, [REFERRAL_EVENTS], "matcher", referral_events_handler(matcher),
                                 scope=OwnedLedgers(runtime.pool))
            yield

    app = create_app("capacity", settings, lifespan,
                     "HAD registry, live capacity declarations, and the matcher that holds places.")
    app.include_router(router)
    app.include_router(fhir_router)
    app.include_router(audit_router)
    return app
