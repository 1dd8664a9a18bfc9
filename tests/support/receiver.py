"""The tests' one webhook receiver, standing for HAD, desk and hospital systems: a real HTTP
endpoint (on 127.0.0.1 or another loopback address, over TLS when given a context) that records
every request with its arrival time and answers as told. `verify` checks a delivery's signature as
an HAD's system would, with the Standard Webhooks reference library.

It runs on aiohttp (a declared test dependency): its server binds any address on port 0 and takes
an ssl.SSLContext as it is, SNI callback included, which the TLS pinning tests need."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook


def verify(secret: str, headers: Mapping[str, str], body: bytes) -> Any:
    """The decoded body of an authentic delivery; standardwebhooks.WebhookVerificationError otherwise."""
    return Webhook(secret).verify(body, dict(headers))


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.time() of arrival

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """`answer(webhook_id, nth)` gives the status of the nth request (1, 2, ...) of a webhook id
    (`fail_first=N`: 503 to the first N, then 204); `location` is sent as the Location header of
    every answer (a redirect, with a 3xx status) and `answer_body` as its body."""

    answer: Callable[[str, int], int] | None = None
    fail_first: int = 0
    delay_seconds: float = 0.0
    host: str = "127.0.0.1"
    location: str | None = None
    answer_body: bytes = b""
    ssl_context: ssl.SSLContext | None = None
    port: int = 0
    url: str = ""  # the base URL once started, ending in /hooks
    received: list[Delivery] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)
    _runner: web.AppRunner | None = None

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://{self.host}:{self.port}/hooks"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def __aenter__(self) -> WebhookReceiver:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def _status(self, webhook_id: str, nth: int) -> int:
        if self.answer is not None:
            return self.answer(webhook_id, nth)
        return 503 if nth <= self.fail_first else 204

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Delivery(request.path, {k.lower(): v for k, v in request.headers.items()}, body,
                                      time.time()))
        webhook_id = request.headers.get("webhook-id", "")
        self.attempts[webhook_id] += 1
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        headers = {"Location": self.location} if self.location else None
        return web.Response(status=self._status(webhook_id, self.attempts[webhook_id]), headers=headers,
                            body=self.answer_body or None)

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.received if d.json.get("type") == event_type]

    def distinct_ids(self) -> set[str]:
        return {d.webhook_id for d in self.received}

    def unique(self) -> dict[str, Delivery]:
        """Deliveries after dropping duplicates by webhook-id, as a Standard Webhooks receiver does."""
        return {d.webhook_id: d for d in self.received}
