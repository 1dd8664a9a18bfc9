"""The referral service's process: HTTP API, outbox relay, Kafka consumers and durable clocks."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from reflexe_common.db import create_pool, migrate
from reflexe_common.http import create_app
from reflexe_common.inbox import ConsumerLoop, DeadLetters, RecordProcessor
from reflexe_common.logging import configure_logging
from reflexe_common.outbox import OutboxRelay
from reflexe_common.service import BackgroundTasks, postgres_check
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_SUBMISSIONS, ensure_topics
from reflexe_referral.entrypoints.api import router
from reflexe_referral.entrypoints.consumers import matching_handler, submission_handler
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


def build_app(settings: ReferralSettings | None = None) -> FastAPI:
    settings = settings or ReferralSettings()
    configure_logging("referral", settings.log_level)
    unanswered_after = timedelta(minutes=settings.offer_unanswered_minutes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await ensure_topics(settings.kafka_bootstrap)
        pool = await create_pool(settings.database_url, SCHEMA)
        await migrate(pool, SCHEMA, "reflexe_referral.migrations")
        dead_letters = DeadLetters(settings.kafka_bootstrap)
        await dead_letters.start()
        service = ReferralService(pool, unanswered_after)
        app.state.referrals = service
        app.state.readiness_checks.update(postgres=postgres_check(pool), kafka=dead_letters.check)
        tasks = BackgroundTasks()
        tasks.start("outbox-relay", OutboxRelay(pool, settings.database_url, SCHEMA, settings.kafka_bootstrap).run())
        for name, topic, handler in (
            ("referral-matching", MATCHING_EVENTS.name, matching_handler(unanswered_after)),
            ("referral-submissions", REFERRAL_SUBMISSIONS.name, submission_handler(unanswered_after)),
        ):
            processor = RecordProcessor(name, pool, dead_letters, handler)
            tasks.start(name, ConsumerLoop(settings.kafka_bootstrap, name, [topic], processor).run())
        tasks.start("clocks", run_clocks(service, settings.clock_poll_seconds))
        try:
            yield
        finally:
            await tasks.stop()
            await dead_letters.stop()
            await pool.close()

    app = create_app("referral", settings.jwt_secret, lifespan,
                     "Referrals from hospitals to HAD establishments: the lifecycle, offers and desk actions.")
    app.include_router(router)
    return app
