"""The capacity service's process: registry and declarations API, the matcher (faust), the
declarations consumer, and the outbox relay."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI

from reflexe_capacity.entrypoints.api import router
from reflexe_capacity.entrypoints.consumers import declaration_handler
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy
from reflexe_capacity.settings import CapacitySettings
from reflexe_common.db import create_pool, migrate
from reflexe_common.http import create_app
from reflexe_common.inbox import ConsumerLoop, DeadLetters, RecordProcessor
from reflexe_common.logging import configure_logging
from reflexe_common.outbox import OutboxRelay
from reflexe_common.service import BackgroundTasks, postgres_check
from reflexe_common.streams import stream_app
from reflexe_common.topics import CAPACITY_DECLARATIONS, REFERRAL_EVENTS, ensure_topics

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
        await ensure_topics(settings.kafka_bootstrap)
        pool = await create_pool(settings.database_url, SCHEMA, max_size=20)
        await migrate(pool, SCHEMA, "reflexe_capacity.migrations")
        dead_letters = DeadLetters(settings.kafka_bootstrap)
        await dead_letters.start()
        app.state.pool = pool
        app.state.matcher = matcher
        app.state.readiness_checks.update(postgres=postgres_check(pool), kafka=dead_letters.check)
        tasks = BackgroundTasks()
        tasks.start("outbox-relay", OutboxRelay(pool, settings.database_url, SCHEMA, settings.kafka_bootstrap).run())
        declarations = RecordProcessor("capacity-declarations", pool, dead_letters, declaration_handler(matcher))
        tasks.start("capacity-declarations",
                    ConsumerLoop(settings.kafka_bootstrap, "capacity-declarations", [CAPACITY_DECLARATIONS.name], declarations).run())
        # The matcher: a faust agent following the referral log, its state in PostgreSQL.
        matching = stream_app(MATCHER_GROUP, settings.kafka_bootstrap, REFERRAL_EVENTS,
                              RecordProcessor("matcher", pool, dead_letters, matcher.handle), settings.instance)
        await matching.start()
        try:
            yield
        finally:
            await matching.stop()  # finishes the record in hand and commits the offsets
            await tasks.stop()
            await dead_letters.stop()
            await pool.close()

    app = create_app("capacity", settings.jwt_secret, lifespan,
                     "HAD registry, live capacity declarations, and the matcher that holds places.")
    app.include_router(router)
    return app
