"""The referral service's process: HTTP API, outbox relay, Kafka consumers and durable clocks."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from reflexe_common.audit import router as audit_router
from reflexe_common.audit import start_writer
from reflexe_common.http import create_app
from reflexe_common.leadership import lead_and_export
from reflexe_common.logging import configure_logging
from reflexe_common.retention import start_retention
from reflexe_common.service import service_runtime
from reflexe_common.topics import INBOUND_REFERRALS, MATCHING_EVENTS
from reflexe_referral.entrypoints.api import router
from reflexe_referral.entrypoints.fhir import router as fhir_router
from reflexe_referral.entrypoints.patient_events import router as patient_events_router
from reflexe_referral.entrypoints.consumers import matching_handler, submission_handler
from reflexe_referral.metrics import GAUGES, REFRESH_SECONDS, OpenReferrals
from reflexe_referral.service_layer.handlers import ReferralService
from reflexe_referral.settings import ReferralSettings

SCHEMA = "referral"
log = logging.getLogger(__name__)


async def run_clocks(service: ReferralService, poll_seconds: float) -> None:
    while True:
        try:
            await service.fire_due_clocks()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("firing clocks failed; will retry")
        await asyncio.sleep(poll_seconds)


# The group that applies the matcher's decisions (offers, escalations) to referrals.
MATCHING_GROUP = "referral-matching"


def build_app(settings: ReferralSettings | None = None) -> FastAPI:
    settings = settings or ReferralSettings()
    configure_logging("referral", settings.log_level)
    unanswered_after = timedelta(minutes=settings.offer_unanswered_minutes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        async with service_runtime(app, settings, SCHEMA, "reflexe_referral.migrations") as runtime:
            service = ReferralService(runtime.pool, unanswered_after)
            app.state.referrals = service
            app.state.unanswered_after = unanswered_after
            runtime.relay_outbox()
            await runtime.stream(MATCHING_GROUP, [MATCHING_EVENTS], MATCHING_GROUP, matching_handler(unanswered_after))
            runtime.consume_inbound("referral-submissions", INBOUND_REFERRALS, submission_handler(unanswered_after))
            runtime.tasks.start("clocks", run_clocks(service, settings.clock_poll_seconds))
            runtime.tasks.start("audit-writer", start_writer(app, runtime.pool).run())
            start_retention(runtime.pool, SCHEMA, runtime.tasks.start)
            # Exported by one replica only (the leader): summed over two they would count twice.
            await lead_and_export(GAUGES, OpenReferrals(runtime.pool).snapshot, REFRESH_SECONDS,
                                  settings.database_url, SCHEMA, runtime.tasks.start)
            yield

    app = create_app("referral", settings, lifespan,
                     "Referrals from hospitals to HAD establishments: the lifecycle, offers and desk actions.")
    app.include_router(router)
    app.include_router(fhir_router)
    app.include_router(patient_events_router)
    app.include_router(audit_router)
    return app
