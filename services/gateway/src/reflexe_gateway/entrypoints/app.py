"""The gateway's process: the MLLP listener, the HTTP side (health, metrics, kept messages) and
the applier carrying out recorded effects. No Kafka: the effects go through the referral
service's API, synchronously, so each message's outcome (applied, unmatched, refused) is known."""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI

from reflexe_common.db import create_pool, prepare_schema
from reflexe_common.http import create_app
from reflexe_common.logging import configure_logging
from reflexe_common.service import BackgroundTasks, postgres_check
from reflexe_gateway.adapters.referral_client import ClientCredentials, ReferralClient, TokenSource
from reflexe_gateway.adapters.store import MessageStore
from reflexe_gateway.entrypoints.api import router
from reflexe_gateway.entrypoints.mllp import start_mllp
from reflexe_gateway.service_layer.gateway import Applier, Gateway
from reflexe_gateway.settings import GatewaySettings

SCHEMA = "gateway"


def build_app(settings: GatewaySettings | None = None, tokens: TokenSource | None = None) -> FastAPI:
    """tokens: where the gateway's access tokens come from (default: its client credentials)."""
    settings = settings or GatewaySettings()
    configure_logging("gateway", settings.log_level)
    if tokens is None:
        if settings.client_secret is None:
            raise ValueError("GATEWAY_CLIENT_SECRET is required to obtain the gateway's access tokens")
        tokens = ClientCredentials(settings.oidc_issuer, settings.client_id, settings.client_secret.get_secret_value(),
                                   settings.oidc_discovery_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        pool = await create_pool(settings.database_url, SCHEMA)
        await prepare_schema(pool, SCHEMA, "reflexe_gateway.migrations", settings.migrate_at_start)
        app.state.pool = pool
        app.state.readiness_checks.update(postgres=postgres_check(pool))
        gateway = Gateway(MessageStore(pool), settings.senders, settings.pseudonym_key.get_secret_value().encode())
        server = await start_mllp(settings.mllp_host, settings.mllp_port, gateway.receive, settings.max_message_bytes,
                                  lambda: datetime.now(UTC))
        app.state.mllp_port = server.sockets[0].getsockname()[1]
        referrals = ReferralClient(settings.referral_url, tokens)
        tasks = BackgroundTasks()
        tasks.start("applier", Applier(pool, referrals).run(settings.apply_poll_seconds))
        try:
            yield
        finally:
            server.close()
            await tasks.stop()
            await referrals.close()
            await pool.close()

    app = create_app("gateway", settings, lifespan,
                     "HL7 v2.5 (IHE PAM FR) gateway: MLLP on its own port; here the messages kept for a person.")
    app.include_router(router)
    return app
