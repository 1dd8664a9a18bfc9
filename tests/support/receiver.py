"""A local webhook receiver standing for HAD and desk systems: it records every delivery with
its arrival time, and can be told to fail the first attempts of each webhook. `verify` checks a
delivery's signature as an HAD's system would, with the Standard Webhooks reference library."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> Any:
    """The decoded body of an authentic delivery; standardwebhooks.WebhookVerificationError otherwise."""
    return Webhook(secret).verify(body, dict(headers))


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float  # time.time()

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    fail_first: int = 0  # answer 503 to the first N attempts of each webhook-id
    deliveries: list[Delivery] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            body = await request.body()
            webhook_id = request.headers.get("webhook-id", "")
            self.attempts[webhook_id] += 1
            if self.attempts[webhook_id] <= self.fail_first:
                return Response(status_code=503)
            self.deliveries.append(Delivery(request.url.path, dict(request.headers), body, time.time()))
            return Response(status_code=204)

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.json.get("type") == event_type]

    def unique(self) -> dict[str, Delivery]:
        """Deliveries after dropping duplicates by webhook-id, as a Standard Webhooks receiver does."""
        return {d.headers["webhook-id"]: d for d in self.deliveries}
