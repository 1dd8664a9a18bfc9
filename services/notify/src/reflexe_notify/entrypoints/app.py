"""The notify service's process: HTTP API, the event consumer and the webhook dispatcher."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from reflexe_common.audit import router as audit_router
from reflexe_common.audit import start_writer
from reflexe_common.batch_processor import BatchProcessor
from reflexe_common.inbox import RecordProcessor
from reflexe_common.http import create_app
from reflexe_common.logging import configure_logging
from reflexe_common.retention import RetentionSettings, delivery_attempts_purge, start_retention
from reflexe_common.service import service_runtime
from reflexe_notify.adapters.secret_box import SecretBox
from reflexe_notify.adapters.webhook_http import Resolver, WebhookGuard, system_resolver
from reflexe_notify.adapters.oidc import OidcClient
from reflexe_notify.adapters.sessions import prune_periodically as prune_sessions_periodically
from reflexe_notify.entrypoints.api import router
from reflexe_notify.entrypoints.consumers import CONSUMER_GROUP, TOPICS
from reflexe_notify.entrypoints.pages import include_pages
from reflexe_notify.service_layer.desk_stream import DeskStreamHub, prune_periodically
from reflexe_notify.service_layer import had_stream
from reflexe_notify.service_layer.dispatcher import Dispatcher
from reflexe_notify.service_layer.notifications import batch_handler, event_handler
from reflexe_notify.service_layer.secret_keys import seal_plaintext_secrets
from reflexe_notify.settings import NotifySettings

SCHEMA = "notify"


def build_app(settings: NotifySettings | None = None, resolver: Resolver = system_resolver) -> FastAPI:
    """`resolver` answers the webhook hosts' addresses (tests replace it to play DNS tricks)."""
    settings = settings or NotifySettings()
    configure_logging("notify", settings.log_level)
    guard = WebhookGuard(allow_insecure=settings.allow_insecure_webhooks, allowed_networks=settings.allowed_networks,
                         resolver=resolver)
    box = SecretBox(settings.secret_key_list)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Every attempt under way holds a connection while it records its outcome.
        async with service_runtime(app, settings, SCHEMA, "reflexe_notify.migrations",
                                   pool_size=max(10, settings.concurrency + 4)) as runtime:
            app.state.settings = settings
            app.state.webhook_guard = guard
            app.state.secret_box = box
            await seal_plaintext_secrets(runtime.pool, box)  # before anything reads or writes a secret
            hub = DeskStreamHub(runtime.pool, settings.database_url, SCHEMA)
            app.state.desk_hub = hub
            runtime.tasks.start("notify-desk-stream", hub.run())
            runtime.tasks.start("notify-desk-stream-pruning",
                                prune_periodically(runtime.pool, settings.desk_stream_keep_days))
            runtime.tasks.start("notify-had-referrals-pruning",
                                had_stream.prune_periodically(runtime.pool, settings.desk_stream_keep_days))
            # The events of each poll routed and recorded together; their stream entries told to
            # this process's live readers as soon as committed (other processes hear the NOTIFY).
            one_by_one = RecordProcessor(CONSUMER_GROUP, runtime.pool, runtime.dead_letters,
                                         event_handler(settings.max_attempts, settings.public_url))
            await runtime.stream_to(CONSUMER_GROUP, TOPICS, BatchProcessor(
                runtime.pool, runtime.dead_letters, one_by_one, batch_handler(settings.max_attempts, settings.public_url),
                after_commit=hub.tell))
            runtime.tasks.start("audit-writer", start_writer(app, runtime.pool).run())
            retention = RetentionSettings()
            start_retention(runtime.pool, SCHEMA, runtime.tasks.start, [delivery_attempts_purge(retention)], retention)
            runtime.tasks.start("notify-dispatcher", Dispatcher(runtime.pool, settings, SCHEMA, guard, box).run())
            # The desk page reads the referral and capacity services as the desk.
            async with httpx.AsyncClient(timeout=5.0) as http:
                app.state.http = http
                app.state.oidc = OidcClient(settings.oidc_issuer, settings.oidc_client_id, http, app.state.verifier.jwks,
                                           settings.oidc_discovery_url)
                runtime.tasks.start("notify-page-sessions-pruning", prune_sessions_periodically(runtime.pool))
                yield

    app = create_app("notify", settings, lifespan,
                     "Signed webhooks (Standard Webhooks) and e-mails to HADs, desks and hospitals, with a delivery log; "
                     "the desks' live stream (SSE), the desk page (/desk) and the HADs' page (/had).")
    app.include_router(router)
    include_pages(app)
    app.include_router(audit_router)
    return app
