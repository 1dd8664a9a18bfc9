"""Everyone concerned is told, on the real broker and database: the HAD whose offer was open or
whose acceptance stood hears of the cancellation by webhook (the others do not), an HAD of its
offer's expiry or withdrawal; a widened referral reaches the neighbouring desk's stream and alerts
(and its later events follow); a multi-department HAD's capacity reaches each of its desks."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import capacity_pb2, referral_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_common.topics import CAPACITY_EVENTS
from reflexe_notify.entrypoints.app import build_app
from tests.integration.notify.kit import AT, header, notify_settings, publish, referral_requested
from tests.support.data import unique_finess
from tests.support.desk import SseCollector
from tests.support.infra import Infra
from tests.support.receiver import WebhookReceiver
from tests.support.services import eventually, token
from tests.support.territory import own_department

pytestmark = pytest.mark.integration
# Departments only this module writes into and reads.
CANCEL_DEPARTMENT, OWN_DEPARTMENT, NEIGHBOUR, NOT_WIDENED, HAD_FIRST, HAD_SECOND = (own_department() for _ in range(6))


@pytest.fixture(scope="module")
async def app(infra: Infra, producer: AIOKafkaProducer) -> AsyncIterator[Any]:
    application = build_app(notify_settings(infra))
    async with application.router.lifespan_context(application):
        await application.state.pool.execute("UPDATE subscriptions SET active = false")
        await eventually(application.state.desk_hub.listening.is_set, what="the desk stream listener")
        yield application


async def subscribe_had(client: httpx.AsyncClient, receiver: WebhookReceiver, had: str) -> None:
    response = await client.post("/v1/subscriptions", json={"url": receiver.url, "event_types": []},
                                 headers=token("had", finess=had))
    assert response.status_code == 201, response.text


def bodies(receiver: WebhookReceiver, event_type: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.of_type(event_type)]


def offer_made(referral_id: str, department: str, had: str, offer_id: str) -> referral_pb2.OfferMade:
    return referral_pb2.OfferMade(header=header(referral_id, department), offer_id=offer_id, had_finess=had,
                                  hold_until=ts(AT + timedelta(minutes=30)),
                                  explanation=f"Proposé à HAD ({had}) : 3/40 places libres.")


async def test_a_cancellation_reaches_the_had_that_accepted_and_not_the_one_that_declined(
        app: Any, client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any) -> None:
    declined_had, accepted_had = unique_finess(), unique_finess()
    declined_receiver, accepted_receiver = await receivers(), await receivers()
    await subscribe_had(client, declined_receiver, declined_had)
    await subscribe_had(client, accepted_receiver, accepted_had)
    referral_id, first_offer, second_offer = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    d = CANCEL_DEPARTMENT
    for message in (
        referral_requested(d, unique_finess(), referral_id),
        offer_made(referral_id, d, declined_had, first_offer),
        referral_pb2.OfferDeclined(header=header(referral_id, d), offer_id=first_offer, had_finess=declined_had,
                                   reason="NO_CAPACITY"),
        offer_made(referral_id, d, accepted_had, second_offer),
        referral_pb2.OfferAccepted(header=header(referral_id, d), offer_id=second_offer, had_finess=accepted_had),
        referral_pb2.ReferralCancelled(header=header(referral_id, d), reason="PATIENT_DECEASED", text="texte libre"),
    ):
        await publish(producer, message)

    await eventually(lambda: bodies(accepted_receiver, "referral.cancelled"), what="the accepting HAD told")
    [told] = bodies(accepted_receiver, "referral.cancelled")
    assert told["data"] == {"referral_id": referral_id, "department": d, "reason": "PATIENT_DECEASED"}
    # Its deliveries were stored in the same transaction as the other's would have been.
    stored = await app.state.pool.fetch("SELECT event_type FROM deliveries WHERE recipient = $1", f"had:{declined_had}")
    assert "referral.cancelled" not in [r["event_type"] for r in stored]
    assert not declined_receiver.of_type("referral.cancelled")
    # The HAD's own page stream has it too.
    stream = await app.state.pool.fetch("SELECT type FROM desk_events WHERE department = $1 ORDER BY seq",
                                        f"had:{accepted_had}")
    assert [r["type"] for r in stream][-1] == "referral.cancelled"


async def test_an_had_hears_of_its_offer_expired_or_withdrawn(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any) -> None:
    expired_had, withdrawn_had = unique_finess(), unique_finess()
    expired_receiver, withdrawn_receiver = await receivers(), await receivers()
    await subscribe_had(client, expired_receiver, expired_had)
    await subscribe_had(client, withdrawn_receiver, withdrawn_had)
    d, referral_id, offer_id, late_offer = CANCEL_DEPARTMENT, str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    for message in (
        referral_requested(d, unique_finess(), referral_id),
        offer_made(referral_id, d, expired_had, offer_id),
        referral_pb2.OfferExpired(header=header(referral_id, d), offer_id=offer_id, had_finess=expired_had),
        referral_pb2.ReferralCancelled(header=header(referral_id, d), reason="PATIENT_HOSPITALISED"),
        # The matcher's late offer, refused by the closed referral.
        referral_pb2.OfferWithdrawn(header=header(referral_id, d), offer_id=late_offer, had_finess=withdrawn_had,
                                    why="referral is CANCELLED"),
    ):
        await publish(producer, message)

    await eventually(lambda: bodies(withdrawn_receiver, "offer.withdrawn"), what="the withdrawn offer told")
    assert bodies(withdrawn_receiver, "offer.withdrawn")[0]["data"] == {
        "referral_id": referral_id, "department": d, "offer_id": late_offer, "had_finess": withdrawn_had,
        "why": "referral is CANCELLED"}
    await eventually(lambda: bodies(expired_receiver, "offer.expired"), what="the expired offer told")
    assert bodies(expired_receiver, "offer.expired")[0]["data"]["offer_id"] == offer_id
    # Its offer had expired before the cancellation: the referral no longer concerned it.
    assert not expired_receiver.of_type("referral.cancelled")


async def test_a_widened_referral_reaches_the_neighbouring_desk_and_its_later_events_follow(
        client: httpx.AsyncClient, url: str, producer: AIOKafkaProducer) -> None:
    referral_id, offer_id, neighbour_had = str(uuid.uuid4()), str(uuid.uuid4()), unique_finess()
    mine = lambda events: [e.json for e in events if e.json["data"].get("referral_id") == referral_id]  # noqa: E731
    async with httpx.AsyncClient() as http:
        streams = {d: SseCollector(http, f"{url}/v1/desks/{d}/stream", token("desk", department=d))
                   for d in (OWN_DEPARTMENT, NEIGHBOUR, NOT_WIDENED)}
        for stream in streams.values():
            await asyncio.wait_for(stream.opened.wait(), 10)
            assert stream.status == 200
        for message in (
            referral_requested(OWN_DEPARTMENT, unique_finess(), referral_id),
            referral_pb2.SearchWidened(header=header(referral_id, OWN_DEPARTMENT), departments=[NEIGHBOUR]),
            offer_made(referral_id, OWN_DEPARTMENT, neighbour_had, offer_id),
        ):
            await publish(producer, message)
        await eventually(lambda: len(mine(streams[NEIGHBOUR].events)) >= 2, what="the neighbour's stream")
        await eventually(lambda: len(mine(streams[OWN_DEPARTMENT].events)) >= 3, what="the own desk's stream")
        for stream in streams.values():
            await stream.stop()

    widened, offered = mine(streams[NEIGHBOUR].events)
    assert widened["type"] == "referral.widened" and widened["alert"] is True
    assert widened["department"] == NEIGHBOUR and widened["data"]["department"] == OWN_DEPARTMENT
    assert offered["type"] == "offer.proposed" and offered["data"]["had_finess"] == neighbour_had
    own = mine(streams[OWN_DEPARTMENT].events)
    assert [e["type"] for e in own] == ["referral.requested", "referral.widened", "offer.proposed"]
    assert own[1]["alert"] is False  # its own act
    assert mine(streams[NOT_WIDENED].events) == []

    alerts = (await client.get(f"/v1/desks/{NEIGHBOUR}/alerts", headers=token("desk", department=NEIGHBOUR))).json()
    assert [a["type"] for a in alerts["alerts"] if a["data"].get("referral_id") == referral_id] == ["referral.widened"]
    elsewhere = (await client.get(f"/v1/desks/{NOT_WIDENED}/alerts", headers=token("desk", department=NOT_WIDENED))).json()
    assert all(a["data"].get("referral_id") != referral_id for a in elsewhere["alerts"])


async def test_a_multi_department_hads_capacity_reaches_each_desk_it_serves(
        url: str, producer: AIOKafkaProducer) -> None:
    had = unique_finess()
    changed = capacity_pb2.LivePlacesChanged(had_finess=had, department=HAD_FIRST, occurred_at=ts(AT), live_places=3,
                                             declared_places=4, status="OPEN", authorised_places=30,
                                             departments=[HAD_FIRST, HAD_SECOND])
    async with httpx.AsyncClient() as http:
        streams = {d: SseCollector(http, f"{url}/v1/desks/{d}/stream", token("desk", department=d))
                   for d in (HAD_FIRST, HAD_SECOND)}
        for stream in streams.values():
            await asyncio.wait_for(stream.opened.wait(), 10)
        envelope = wrap(changed, "tests")
        await producer.send_and_wait(CAPACITY_EVENTS.name, envelope.value(), key=HAD_FIRST.encode(),
                                     headers=envelope.headers())

        def told(department: str) -> list[dict[str, Any]]:
            return [e.json for e in streams[department].events if e.json["data"].get("had_finess") == had]

        await eventually(lambda: told(HAD_FIRST) and told(HAD_SECOND), what="both desks' streams")
        for stream in streams.values():
            await stream.stop()
    for department in (HAD_FIRST, HAD_SECOND):
        [entry] = told(department)
        assert entry["type"] == "capacity.changed" and entry["department"] == department
        assert entry["data"]["live_places"] == 3
