"""The indicators service's process: a faust agent folds the referral log into facts; the API
and /metrics expose the indicators."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from reflexe_common.http import create_app
from reflexe_common.logging import configure_logging
from reflexe_common.service import service_runtime
from reflexe_common.topics import REFERRAL_EVENTS
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
        async with service_runtime(app, settings, SCHEMA, "reflexe_indicators.migrations") as runtime:
            await runtime.stream(GROUP, REFERRAL_EVENTS, "indicators-facts", fold)
            yield

    app = create_app("indicators", settings.jwt_secret, lifespan, "ARS follow-up indicators computed from the event log.")
    app.include_router(router)
    return app
