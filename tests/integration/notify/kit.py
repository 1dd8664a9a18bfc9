"""Test kit for the notify integration tests: event builders, and the pages on the real services
(the webhook receiver and polling are tests/support's)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from reflexe.v1 import matching_pb2, referral_pb2

from reflexe_common.envelope import Envelope, ts, wrap
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS
from reflexe_notify.entrypoints.app import build_app as build_notify
from reflexe_notify.settings import NotifySettings
from tests.support.data import pseudonym, unique_finess
from tests.support.infra import Infra
from tests.support.platform import in_process_env, referral_and_capacity_in_process
from tests.support.platform import register_had as register_had_serving
from tests.support.services import NOTIFY_ENV

# What the notify service needs to run in tests: a key sealing webhook secrets, and the local
# receivers (plain http on 127.0.0.1) allowed, which a deployment refuses by default.
NOTIFY_TEST_ENV = NOTIFY_ENV


def notify_settings(infra: Infra, **overrides: Any) -> NotifySettings:
    """Notify on the session's broker, database and token issuer, retrying quickly (4 attempts,
    backoff from 0.05 s to 0.2 s, 3 s per attempt), with the tests' key and local receivers allowed."""
    return NotifySettings(**in_process_env(infra, **{
        "NOTIFY_MAX_ATTEMPTS": 4, "NOTIFY_BACKOFF_BASE_SECONDS": 0.05, "NOTIFY_BACKOFF_MAX_SECONDS": 0.2,
        "NOTIFY_TIMEOUT_SECONDS": 3, "NOTIFY_IDLE_POLL_SECONDS": 0.5, **NOTIFY_TEST_ENV, **overrides}))

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


# ---------------------------------------------------------------- the pages, on the real services


@asynccontextmanager
async def in_process_platform(topics) -> AsyncIterator[dict[str, Any]]:
    """Referral and capacity served in process on the real broker and database, notify's app (its
    pages read them), and clients of the first two."""
    async with referral_and_capacity_in_process(topics) as running:
        notify = build_notify(NotifySettings(**in_process_env(topics), **NOTIFY_ENV,
                                             NOTIFY_REFERRAL_URL=running.referral_url,
                                             NOTIFY_CAPACITY_URL=running.capacity_url,
                                             NOTIFY_PUBLIC_URL="https://notify"))
        async with notify.router.lifespan_context(notify):
            yield {"notify": notify, "referral": running.referral, "capacity": running.capacity}


def page_browser(platform: dict[str, Any]) -> httpx.AsyncClient:
    """A browser of notify's pages: it keeps their cookies."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=platform["notify"]), base_url="https://notify", timeout=30)


async def log_in(client: httpx.AsyncClient, page: str, login_hint: str) -> httpx.Response:
    """A browser's whole login: the page's login route, the provider (logging in `login_hint`), its callback."""
    start = await client.get(f"/{page}/login", params={"login_hint": login_hint})
    assert start.status_code == 303, start.text
    query = dict(parse_qsl(urlsplit(start.headers["location"]).query))
    assert query["code_challenge_method"] == "S256" and query["redirect_uri"] == f"https://notify/{page}/callback"
    async with httpx.AsyncClient() as provider:
        back = await provider.get(start.headers["location"])
    returned = urlsplit(back.headers["location"])
    assert returned.path == f"/{page}/callback"
    return await client.get(f"{returned.path}?{returned.query}")


async def register_had(capacity: httpx.AsyncClient, commune: str, name: str | None = None, department: str = "34",
                       **overrides: Any) -> str:
    """A new HAD of `department` (the Hérault unless told) serving `commune`, open with 3 places."""
    finess = unique_finess(department)
    return await register_had_serving(capacity, [commune], places=3, department=department, finess=finess,
                                      name=name or f"HAD de test {finess}", **overrides)
