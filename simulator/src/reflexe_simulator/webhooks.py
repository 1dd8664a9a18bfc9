"""The simulator's webhook receiver: it plays the HAD and desk systems Réflexe notifies.

Réflexe signs each delivery the Standard Webhooks way (docs/webhooks.md); the receiver verifies
with the specification's reference library, `standardwebhooks`, as an HAD's system would.

Routes: ``POST /hooks/had/{finess}`` and ``POST /hooks/desk/{department}``. A delivery whose
signature does not verify (or whose timestamp is more than five minutes from now) gets 401 and is
counted; a duplicate ``webhook-id`` gets 200 and is not processed again.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook, WebhookVerificationError

from reflexe_common.webhook_secrets import generate_secret


def authentic(secret: str, headers: Mapping[str, str], body: bytes) -> bool:
    """True when one of the ``v1`` signatures matches and the timestamp is recent enough."""
    try:
        Webhook(secret).verify(body, dict(headers), json_parse=False)
    except (WebhookVerificationError, ValueError):  # the library raises ValueError on a malformed signature
        return False
    return True


@dataclass(frozen=True)
class Delivery:
    """A verified webhook: who it was for (``had``/``desk`` and its key) and its event."""

    recipient_kind: str
    recipient: str
    webhook_id: str
    type: str
    data: dict[str, Any]


Handler = Callable[[Delivery], Awaitable[None]]


class WebhookReceiver:
    """Verifies, deduplicates and hands deliveries to ``handler``; counts what it sees."""

    def __init__(self, handler: Handler, counters: Any = None, max_seen: int = 50_000) -> None:
        self.handler = handler
        self.counters = counters
        self.secrets: dict[tuple[str, str], str] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._max_seen = max_seen

    def secret_for(self, kind: str, key: str) -> str:
        """The secret of a recipient, created on first use."""
        return self.secrets.setdefault((kind, key), generate_secret())

    def _count(self, name: str) -> None:
        if self.counters is not None:
            self.counters.inc(name)

    async def receive(self, kind: str, key: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        secret = self.secrets.get((kind, key))
        if secret is None:
            self._count("webhooks_unknown_recipient")
            return 404, {"error": f"no simulated {kind} {key}"}
        if not authentic(secret, headers, body):
            self._count("bad_signatures")
            return 401, {"error": "bad signature"}
        webhook_id = {k.lower(): v for k, v in headers.items()}["webhook-id"]
        self._count("webhooks_received")
        if webhook_id in self._seen:
            self._count("webhooks_duplicate")
            return 200, {"status": "duplicate"}
        self._seen[webhook_id] = None
        if len(self._seen) > self._max_seen:
            self._seen.popitem(last=False)
        try:
            event = json.loads(body)
        except ValueError:
            return 400, {"error": "body is not JSON"}
        delivery = Delivery(kind, key, webhook_id, str(event.get("type", "")), dict(event.get("data") or {}))
        await self.handler(delivery)
        return 200, {"status": "ok"}


def build_app(receiver: WebhookReceiver) -> FastAPI:
    app = FastAPI(title="Réflexe simulator webhook receiver", docs_url=None, redoc_url=None)

    @app.post("/hooks/{kind}/{key}")
    async def hook(kind: str, key: str, request: Request) -> JSONResponse:
        if kind not in ("had", "desk"):
            return JSONResponse({"error": "unknown recipient kind"}, status_code=404)
        status, payload = await receiver.receive(kind, key, request.headers, await request.body())
        return JSONResponse(payload, status_code=status)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
