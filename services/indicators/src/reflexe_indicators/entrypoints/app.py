"""The indicators service's process: a faust agent folds the referral log into facts; the API
and /metrics expose the indicators."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from reflexe_common.db import create_pool, migrate
from reflexe_common.http import create_app
from reflexe_common.inbox import DeadLetters, RecordProcessor
from reflexe_common.logging import configure_logging
from reflexe_common.service import postgres_check
from reflexe_common.streams import stream_app
from reflexe_common.topics import REFERRAL_EVENTS, ensure_topics
from reflexe_indicators.entrypoints.api import router
from reflexe_indicators.service_layer.facts import fold
from reflexe_indicators.settings import IndicatorsSettings

SCHEMA = "indicators"
GROUP = "reflexe-indicators"


def build_app(settings: IndicatorsSettings | None = None) -> FastAPI:
    settings = settings or IndicatorsSettings()
    configure_logging("indicators", settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await ensure_topics(settings.kafka_bootstrap)
        pool = await create_pool(settings.database_url, SCHEMA)
        await migrate(pool, SCHEMA, "reflexe_indicators.migrations")
        dead_letters = DeadLetters(settings.kafka_bootstrap)
        await dead_letters.start()
        app.state.pool = pool
        app.state.readiness_checks.update(postgres=postgres_check(pool), kafka=dead_letters.check)
        stream = stream_app(GROUP, settings.kafka_bootstrap, REFERRAL_EVENTS,
                            RecordProcessor("indicators-facts", pool, dead_letters, fold), settings.instance)
        await stream.start()
        try:
            yield
        finally:
            await stream.stop()
            await dead_letters.stop()
            await pool.close()

    app = create_app("indicators", settings.jwt_secret, lifespan, "ARS follow-up indicators computed from the event log.")
    app.include_router(router)
    return app
