"""Test kit for the notify integration tests: a real HTTP receiver, event builders, polling."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from reflexe.v1 import matching_pb2, referral_pb2

from reflexe_common.envelope import Envelope, ts, wrap
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS
from tests.support.data import pseudonym
from tests.support.services import NOTIFY_ENV

# What the notify service needs to run in tests: a key sealing webhook secrets, and the local
# receivers (plain http on 127.0.0.1) allowed, which a deployment refuses by default.
NOTIFY_TEST_ENV = NOTIFY_ENV


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() of arrival

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 (or another loopback address) that records every request.

    `answer(webhook_id, nth)` gives the status of the nth request (1, 2, ...) for a webhook id;
    `location` is sent as the Location header of every answer (a redirect, with a 3xx status)."""

    answer: Callable[[str, int], int] = lambda _id, _nth: 204
    delay_seconds: float = 0.0
    host: str = "127.0.0.1"
    location: str | None = None
    answer_body: bytes = b""
    port: int = 0
    received: list[Received] = field(default_factory=list)
    _seen: Counter = field(default_factory=Counter)
    _runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{self.port}/hooks"
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, body, time.time()))
        webhook_id = request.headers.get("webhook-id", "")
        self._seen[webhook_id] += 1
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        headers = {"Location": self.location} if self.location else None
        return web.Response(status=self.answer(webhook_id, self._seen[webhook_id]), headers=headers,
                            body=self.answer_body or None)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if json.loads(r.body)["type"] == event_type]

    def distinct_ids(self) -> set[str]:
        return {r.webhook_id for r in self.received}


async def eventually(check: Callable[[], Any] | Callable[[], Awaitable[Any]], timeout: float = 20.0,
                     interval: float = 0.01, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def finess() -> str:
    return f"{random.randrange(10**8, 10**9):09d}"


AT = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


def header(referral_id: str, department: str) -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id=referral_id, department=department, occurred_at=ts(AT),
                                            actor="system")


def offer_proposed(department: str, had: str, referral_id: str | None = None) -> matching_pb2.OfferProposed:
    return matching_pb2.OfferProposed(
        referral_id=referral_id or str(uuid.uuid4()), department=department, occurred_at=ts(AT),
        offer_id=str(uuid.uuid4()), had_finess=had, hold_id=str(uuid.uuid4()),
        hold_until=ts(AT + timedelta(minutes=30)), explanation="HAD la plus proche avec une place", by_desk=False,
    )


def referral_requested(department: str, hospital: str, referral_id: str) -> referral_pb2.ReferralRequested:
    return referral_pb2.ReferralRequested(header=header(referral_id, department), request=referral_pb2.ReferralRequest(
        referral_id=referral_id, department=department,
        source=referral_pb2.Source(kind="ED", finess=hospital),
        patient=referral_pb2.Patient(pseudonym=pseudonym("pseudo-0001"), birth_year=1942, sex="F", care_commune="34172",
                                     place_of_care="HOME"),
        clinical=referral_pb2.Clinical(main_mpp="04", urgency="WITHIN_24H", palliative=True),
    ))


def topic_of(message: Message) -> str:
    return MATCHING_EVENTS.name if isinstance(message, matching_pb2.OfferProposed | matching_pb2.MatchExhausted) \
        else REFERRAL_EVENTS.name


async def publish(producer: AIOKafkaProducer, message: Message, envelope: Envelope | None = None) -> Envelope:
    envelope = envelope or wrap(message, "tests")
    department = getattr(message, "department", "") or message.header.department
    await producer.send_and_wait(topic_of(message), envelope.value(), key=department.encode(),
                                 headers=envelope.headers())
    return envelope
