"""The notify service's process: HTTP API, the event consumer and the webhook dispatcher."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from reflexe_common.http import create_app
from reflexe_common.logging import configure_logging
from reflexe_common.service import service_runtime
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
        # Every attempt under way holds a connection while it records its outcome.
        async with service_runtime(app, settings, SCHEMA, "reflexe_notify.migrations",
                                   pool_size=max(10, settings.concurrency + 4)) as runtime:
            app.state.settings = settings
            runtime.consume(CONSUMER_GROUP, TOPICS, event_handler(settings.max_attempts))
            runtime.tasks.start("notify-dispatcher", Dispatcher(runtime.pool, settings, SCHEMA).run())
            yield

    app = create_app("notify", settings.jwt_secret, lifespan,
                     "Signed webhooks (Standard Webhooks) to HADs, desks and hospitals, with a delivery log.")
    app.include_router(router)
    return app
