"""The notify service in-process against real Kafka, PostgreSQL and HTTP receivers."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from reflexe.v1 import referral_pb2
from standardwebhooks import WebhookVerificationError

from reflexe_common.envelope import wrap
from reflexe_common.topics import DEAD_LETTERS, REFERRAL_EVENTS
from reflexe_notify.entrypoints.app import build_app
from reflexe_notify.service_layer.notifications import event_handler
from tests.integration.notify.kit import header, notify_settings, offer_proposed, publish, referral_requested
from tests.support.data import unique_finess
from tests.support.infra import Infra
from tests.support.receiver import WebhookReceiver, verify
from tests.support.services import eventually, token
from tests.support.territory import own_department

pytestmark = pytest.mark.integration
MAX_ATTEMPTS = 4
WARM_UP_DEPARTMENT = own_department()


@pytest.fixture
def department() -> str:
    """A department of its own per test, so that desks' receivers see only their test's webhooks."""
    return own_department()


@pytest.fixture(scope="module")
async def app(infra: Infra, producer: AIOKafkaProducer) -> AsyncIterator[Any]:
    application = build_app(notify_settings(infra, NOTIFY_MAX_ATTEMPTS=MAX_ATTEMPTS, NOTIFY_TIMEOUT_SECONDS=2))
    async with application.router.lifespan_context(application):
        # Subscriptions left by earlier runs on a reused database would add deliveries of their own.
        await application.state.pool.execute("UPDATE subscriptions SET active = false")
        yield application


async def subscribe(client: httpx.AsyncClient, url: str, role: str, event_types: list[str] | None = None,
                    **scope: str) -> dict[str, Any]:
    response = await client.post("/v1/subscriptions", json={"url": url, "event_types": event_types or []},
                                 headers=token(role, **scope))
    assert response.status_code == 201, response.text
    return response.json()


async def deliveries(client: httpx.AsyncClient, role: str, **scope: str) -> list[dict[str, Any]]:
    """The caller's whole delivery log, page by page (pages are at most 200 rows)."""
    rows: list[dict[str, Any]] = []
    while True:
        response = await client.get("/v1/deliveries", params={"limit": 200, "offset": len(rows)}, headers=token(role, **scope))
        assert response.status_code == 200, response.text
        rows += response.json()
        if len(response.json()) < 200:
            return rows


@pytest.fixture(scope="module", autouse=True)
async def consumer_is_running(app: Any, client: httpx.AsyncClient, producer: AIOKafkaProducer) -> None:
    """One round trip before the tests: the consumer group has joined and the dispatcher runs."""
    r = await WebhookReceiver().start()
    try:
        await subscribe(client, r.url, "desk", department=WARM_UP_DEPARTMENT)
        await publish(producer, offer_proposed(WARM_UP_DEPARTMENT, unique_finess()))
        await eventually(lambda: r.received, timeout=60, what="the warm-up webhook")
    finally:
        await r.stop()


async def test_offer_proposed_reaches_the_had_and_the_desk_signed_as_documented(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, department: str) -> None:
    had = unique_finess()
    had_receiver, desk_receiver = await receivers(), await receivers()
    had_secret = (await subscribe(client, had_receiver.url, "had", finess=had))["secret"]
    desk_secret = (await subscribe(client, desk_receiver.url, "desk", department=department))["secret"]
    event = offer_proposed(department, had)
    await publish(producer, event)

    await eventually(lambda: had_receiver.received and desk_receiver.received, what="both webhooks")
    for r, secret in ((had_receiver, had_secret), (desk_receiver, desk_secret)):
        [got] = r.received
        assert got.headers["content-type"] == "application/json"
        assert got.webhook_id.startswith("msg_")
        body = verify(secret, got.headers, got.body)
        assert body["type"] == "offer.proposed"
        assert body["data"] == {"referral_id": event.referral_id, "department": department, "offer_id": event.offer_id,
                                "had_finess": had, "hold_until": "2026-11-22T10:45:00+00:00",
                                "explanation": event.explanation, "by_desk": False}
    assert had_receiver.received[0].webhook_id != desk_receiver.received[0].webhook_id

    async def logged_delivered() -> list[dict[str, Any]]:
        log = await deliveries(client, "had", finess=had)
        return log if log and log[0]["status"] == "DELIVERED" else []

    [entry] = await eventually(logged_delivered, what="the delivery log")
    assert entry["event_type"] == "offer.proposed" and entry["attempts"] == 1
    assert [a["outcome"] for a in entry["attempt_log"]] == ["delivered"]
    assert entry["attempt_log"][0]["http_status"] == 204
    # A desk sees its department's log, the HAD's delivery included.
    desk_log = await deliveries(client, "desk", department=department)
    ours = {d["recipient"] for d in desk_log}
    assert {f"had:{had}", f"desk:{department}"} <= ours
    assert all(d["department"] == department for d in desk_log)


async def test_the_source_hospital_hears_of_answers_and_filters_apply(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, department: str) -> None:
    hospital, had, referral_id = unique_finess(), unique_finess(), str(uuid.uuid4())
    hospital_receiver, desk_receiver = await receivers(), await receivers()
    await subscribe(client, hospital_receiver.url, "hospital", finess=hospital)
    await subscribe(client, desk_receiver.url, "desk", ["referral.requested"], department=department)
    await publish(producer, referral_requested(department, hospital, referral_id))
    await publish(producer, referral_pb2.OfferAccepted(header=header(referral_id, department), offer_id="o-1",
                                                       had_finess=had))
    await publish(producer, referral_pb2.ReferralCancelled(header=header(referral_id, department),
                                                           reason="PATIENT_DECEASED", text="free text"))

    await eventually(lambda: len(hospital_receiver.received) == 2 and desk_receiver.received, what="webhooks")
    assert [json.loads(r.body)["type"] for r in hospital_receiver.received] in (
        ["offer.accepted", "referral.cancelled"], ["referral.cancelled", "offer.accepted"])
    assert [json.loads(r.body)["type"] for r in desk_receiver.received] == ["referral.requested"]
    [cancelled] = hospital_receiver.of_type("referral.cancelled")
    assert json.loads(cancelled.body)["data"] == {"referral_id": referral_id, "department": department,
                                                  "reason": "PATIENT_DECEASED"}


async def test_a_receiver_failing_twice_gets_the_same_webhook_a_third_time(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, department: str) -> None:
    had = unique_finess()
    receiver = await receivers(answer=lambda _id, nth: 503 if nth <= 2 else 200)
    secret = (await subscribe(client, receiver.url, "had", finess=had))["secret"]
    await publish(producer, offer_proposed(department, had))

    await eventually(lambda: len(receiver.received) == 3, what="three attempts")
    assert len(receiver.distinct_ids()) == 1
    assert len({r.body for r in receiver.received}) == 1  # the very same body each time
    for r in receiver.received:
        verify(secret, r.headers, r.body)

    async def delivered() -> dict[str, Any] | None:
        log = await deliveries(client, "had", finess=had)
        return log[0] if log and log[0]["status"] == "DELIVERED" else None

    entry = await eventually(delivered, what="DELIVERED in the log")
    assert entry["attempts"] == 3
    assert [(a["attempt"], a["outcome"], a["http_status"]) for a in entry["attempt_log"]] == [
        (1, "retry", 503), (2, "retry", 503), (3, "delivered", 200)]
    assert entry["last_error"] is None


async def test_a_receiver_always_failing_is_given_up_and_the_desk_told(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, department: str) -> None:
    had = unique_finess()
    healthy = False
    had_receiver = await receivers(answer=lambda _id, _nth: 200 if healthy else 500)
    desk_receiver = await receivers()
    await subscribe(client, had_receiver.url, "had", finess=had)
    await subscribe(client, desk_receiver.url, "desk", ["delivery.failed"], department=department)
    await publish(producer, offer_proposed(department, had))

    await eventually(lambda: desk_receiver.received, what="delivery.failed to the desk")
    assert len(had_receiver.received) == MAX_ATTEMPTS
    [failed] = await deliveries(client, "had", finess=had)
    assert failed["status"] == "FAILED" and failed["attempts"] == MAX_ATTEMPTS
    assert failed["last_error"] == "HTTP 500"
    assert [a["outcome"] for a in failed["attempt_log"]] == ["retry"] * (MAX_ATTEMPTS - 1) + ["failed"]
    notice = json.loads(desk_receiver.received[0].body)
    assert notice["type"] == "delivery.failed"
    assert notice["data"] == {"recipient": f"had:{had}", "webhook_id": failed["webhook_id"],
                              "event_type": "offer.proposed", "attempts": MAX_ATTEMPTS}

    # Once the receiver is fixed, the HAD re-queues it: same webhook-id, delivered.
    healthy = True
    response = await client.post(f"/v1/deliveries/{failed['webhook_id']}/retry", headers=token("had", finess=had))
    assert response.status_code == 200, response.text
    await eventually(lambda: had_receiver.received[-1:] and len(had_receiver.received) == MAX_ATTEMPTS + 1,
                     what="the manual retry")
    assert had_receiver.distinct_ids() == {failed["webhook_id"]}
    again = await client.post(f"/v1/deliveries/{failed['webhook_id']}/retry", headers=token("had", finess=had))
    assert again.status_code == 409  # only a FAILED delivery can be re-queued


async def test_410_gone_disables_the_subscription(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, department: str) -> None:
    had = unique_finess()
    gone, desk_receiver = await receivers(answer=lambda _id, _nth: 410), await receivers()
    await subscribe(client, gone.url, "had", finess=had)
    await subscribe(client, desk_receiver.url, "desk", ["delivery.failed"], department=department)
    await publish(producer, offer_proposed(department, had))
    await eventually(lambda: desk_receiver.received, what="delivery.failed")
    assert len(gone.received) == 1
    listed = await client.get("/v1/subscriptions", headers=token("had", finess=had))
    assert listed.json() == []


async def test_a_redelivered_event_is_notified_once(
        app: Any, client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, department: str) -> None:
    had = unique_finess()
    receiver = await receivers()
    await subscribe(client, receiver.url, "had", finess=had)
    event = offer_proposed(department, had)
    envelope = wrap(event, "tests")
    await publish(producer, event, envelope)
    await publish(producer, event, envelope)
    sentinel = offer_proposed(department, had)
    await publish(producer, sentinel)  # same key, same partition: handled after both copies

    await eventually(lambda: len(receiver.received) >= 2, what="the event and the sentinel")
    offers = sorted(json.loads(r.body)["data"]["offer_id"] for r in receiver.received)
    assert offers == sorted([event.offer_id, sentinel.offer_id])

    # Even bypassing the inbox, handling the event again creates no second delivery.
    async with app.state.pool.acquire() as conn, conn.transaction():
        await event_handler(MAX_ATTEMPTS)(conn, envelope)
    assert await app.state.pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE recipient = $1", f"had:{had}") == 2


async def test_a_garbage_record_is_dead_lettered_and_the_consumer_carries_on(
        infra: Infra, client: httpx.AsyncClient, producer: AIOKafkaProducer, receiver: WebhookReceiver, department: str) -> None:
    key = f"garbage-{uuid.uuid4()}".encode()
    await producer.send_and_wait(REFERRAL_EVENTS.name, b"\x00not protobuf", key=key,
                                 headers=[("ce_id", b"x"), ("ce_type", b"reflexe.v1.ReferralRequested")])
    dead = AIOKafkaConsumer(**infra.kafka_options(), enable_auto_commit=False)
    await dead.start()
    try:
        partition = TopicPartition(DEAD_LETTERS.name, 0)
        dead.assign([partition])
        await dead.seek_to_beginning(partition)

        async def found() -> dict[str, bytes] | None:
            batch = await dead.getmany(partition, timeout_ms=200)
            for record in batch.get(partition, []):
                if record.key == key:
                    return dict(record.headers)
            return None

        headers = await eventually(found, what="the dead letter")
    finally:
        await dead.stop()
    assert headers["dlq_consumer"] == b"notify" and headers["dlq_topic"] == REFERRAL_EVENTS.name.encode()
    assert b"missing CloudEvents headers" in headers["dlq_reason"]

    had = unique_finess()
    await subscribe(client, receiver.url, "had", finess=had)
    await publish(producer, offer_proposed(department, had))
    await eventually(lambda: receiver.received, what="a webhook after the poison record")


async def test_api_authentication_and_scope(client: httpx.AsyncClient, receiver: WebhookReceiver) -> None:
    had, other = unique_finess(), unique_finess()
    assert (await client.get("/v1/subscriptions")).status_code == 401
    assert (await client.get("/v1/deliveries", headers={"Authorization": "Bearer nope"})).status_code == 401
    assert (await client.post("/v1/subscriptions", json={"url": receiver.url})).status_code == 401

    async def post(body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return await client.post("/v1/subscriptions", json=body, headers=headers)

    assert (await post({"url": receiver.url, "recipient": "desk:34"}, token("had", finess=had))).status_code == 403
    assert (await post({"url": receiver.url, "recipient": f"had:{other}"}, token("had", finess=had))).status_code == 403
    assert (await post({"url": receiver.url}, token("ars", region="76"))).status_code == 403
    for bad in ("not a url", "ftp://example.org/hook", ""):
        response = await post({"url": bad}, token("had", finess=had))
        assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"
    assert (await post({"url": receiver.url, "event_types": ["no.such"]}, token("had", finess=had))).status_code == 422
    assert (await post({"url": receiver.url, "secret": "whsec_short"}, token("had", finess=had))).status_code == 422
    assert (await post({"url": receiver.url}, token("admin"))).status_code == 422  # an admin names the recipient
    created = await post({"url": receiver.url, "recipient": f"had:{other}"}, token("admin"))
    assert created.status_code == 201 and created.json()["secret"].startswith("whsec_")

    mine = (await post({"url": receiver.url}, token("had", finess=had))).json()
    listed = (await client.get("/v1/subscriptions", headers=token("had", finess=had))).json()
    assert [s["id"] for s in listed] == [mine["id"]] and "secret" not in listed[0]
    theirs = created.json()["id"]
    for path in (f"/v1/subscriptions/{theirs}/rotate", f"/v1/subscriptions/{theirs}/rotate/complete"):
        assert (await client.post(path, headers=token("had", finess=had))).status_code == 404  # not its to know of
    assert (await client.delete(f"/v1/subscriptions/{theirs}", headers=token("had", finess=had))).status_code == 404
    assert (await client.delete(f"/v1/subscriptions/{uuid.uuid4()}", headers=token("had", finess=had))).status_code == 404
    assert (await client.post("/v1/deliveries/msg_nope/retry", headers=token("had", finess=had))).status_code == 404
    assert (await client.delete(f"/v1/subscriptions/{mine['id']}", headers=token("had", finess=had))).status_code == 204
    assert (await client.get("/v1/subscriptions", headers=token("had", finess=had))).json() == []


async def test_secret_rotation_signs_with_both_secrets_then_the_new_one(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receiver: WebhookReceiver, department: str) -> None:
    had = unique_finess()
    me = token("had", finess=had)
    subscription = await subscribe(client, receiver.url, "had", finess=had)
    old = subscription["secret"]
    rotated = await client.post(f"/v1/subscriptions/{subscription['id']}/rotate", headers=me)
    assert rotated.status_code == 200 and rotated.json()["rotating"] is True
    new = rotated.json()["secret"]
    assert (await client.post(f"/v1/subscriptions/{subscription['id']}/rotate", headers=me)).status_code == 409

    await publish(producer, offer_proposed(department, had))
    await eventually(lambda: receiver.received, what="a webhook during the rotation")
    during = receiver.received[0]
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    verify(old, during.headers, during.body)
    verify(new, during.headers, during.body)

    completed = await client.post(f"/v1/subscriptions/{subscription['id']}/rotate/complete", headers=me)
    assert completed.status_code == 200 and completed.json()["rotating"] is False and "secret" not in completed.json()
    await publish(producer, offer_proposed(department, had))
    await eventually(lambda: len(receiver.received) == 2, what="a webhook after the rotation")
    after = receiver.received[1]
    verify(new, after.headers, after.body)
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        verify(old, after.headers, after.body)


async def test_delivery_latency(client: httpx.AsyncClient, producer: AIOKafkaProducer, receiver: WebhookReceiver,
                                department: str) -> None:
    """Kafka publication → webhook received, one event at a time (the unloaded latency)."""
    had = unique_finess()
    await subscribe(client, receiver.url, "had", finess=had)
    latencies = []
    for n in range(1, 31):
        sent = time.time()
        await publish(producer, offer_proposed(department, had))
        await eventually(lambda: len(receiver.received) == n, interval=0.001, what=f"webhook {n}")
        latencies.append(receiver.received[-1].at - sent)
    p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[-1]
    print(f"\nwebhook latency from Kafka publication: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
          f"max {max(latencies) * 1000:.1f} ms")
    assert p50 < 0.5
    metrics = (await client.get("/metrics")).text
    assert 'reflexe_webhook_deliveries_total{outcome="delivered"}' in metrics
    assert "reflexe_webhook_delivery_duration_seconds_bucket" in metrics
    assert "reflexe_webhook_pending_deliveries " in metrics
