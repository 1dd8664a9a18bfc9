"""The notify service's process: HTTP API, the event consumer and the webhook dispatcher."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from reflexe_common.db import create_pool, migrate
from reflexe_common.http import create_app
from reflexe_common.inbox import ConsumerLoop, DeadLetters, RecordProcessor
from reflexe_common.logging import configure_logging
from reflexe_common.service import BackgroundTasks, postgres_check
from reflexe_common.topics import ensure_topics
from reflexe_notify.entrypoints.api import router
from reflexe_notify.entrypoints.consumers import CONSUMER_GROUP, TOPICS
from reflexe_notify.service_layer.dispatcher import Dispatcher
from reflexe_notify.service_layer.notifications import event_handler
from reflexe_notify.settings import NotifySettings

SCHEMA = "notify"


def build_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    configure_logging("notify", settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await ensure_topics(settings.kafka_bootstrap)
        # Every attempt under way holds a connection while it records its outcome.
        pool = await create_pool(settings.database_url, SCHEMA, max_size=max(10, settings.concurrency + 4))
        await migrate(pool, SCHEMA, "reflexe_notify.migrations")
        dead_letters = DeadLetters(settings.kafka_bootstrap)
        await dead_letters.start()
        app.state.pool = pool
        app.state.settings = settings
        app.state.readiness_checks.update(postgres=postgres_check(pool), kafka=dead_letters.check)
        tasks = BackgroundTasks()
        processor = RecordProcessor(CONSUMER_GROUP, pool, dead_letters, event_handler(settings.max_attempts))
        consumer = ConsumerLoop(settings.kafka_bootstrap, CONSUMER_GROUP, TOPICS, processor,
                                client_id=f"{CONSUMER_GROUP}-{settings.instance}")
        app.state.consumer = consumer
        tasks.start("notify-consumer", consumer.run())
        tasks.start("notify-dispatcher", Dispatcher(pool, settings, SCHEMA).run())
        try:
            yield
        finally:
            await tasks.stop()
            await dead_letters.stop()
            await pool.close()

    app = create_app("notify", settings.jwt_secret, lifespan,
                     "Signed webhooks (Standard Webhooks) to HADs, desks and hospitals, with a delivery log.")
    app.include_router(router)
    return app
