"""Kafka authenticates and authorizes, on the real broker started by deploy/local/infra.sh:
no client without a valid SCRAM credential, each service principal only within its ACLs
(reflexe_common.kafka_acls), each hospital or HAD system only on its own inbound topic, and a
command whose claimed establishment is not its sender's dead-lettered as SENDER_MISMATCH."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from reflexe.v1 import capacity_pb2, submission_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_common.kafka import KafkaAccess
from reflexe_common.kafka_acls import SERVICES, service_acls
from reflexe_common.topics import DEAD_LETTERS, MATCHING_EVENTS, REFERRAL_EVENTS, SENDER_MISMATCH
from reflexe_referral.adapters.codec import request_to_proto
from reflexe_referral.entrypoints.schemas import ReferralIn
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.infra import Infra
from tests.support.kafka import as_system, dead_letters, register_system
from tests.support.platform import referral_and_capacity_in_process
from tests.support.services import eventually, token
from tests.support.territory import own_commune

pytestmark = pytest.mark.integration


async def refused_reading(topic: str, **consumer_options) -> None:
    """A consumer with these options (its principal, its group) is refused the records of `topic`."""
    reader = AIOKafkaConsumer(topic, **consumer_options, auto_offset_reset="earliest", request_timeout_ms=5000)
    await reader.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await reader.getmany(timeout_ms=5000)
    finally:
        await reader.stop()


async def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(topics: Infra) -> None:
    anonymous = AIOKafkaProducer(bootstrap_servers=topics.kafka_bootstrap, request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await anonymous.start()
    await anonymous.stop()
    wrong = KafkaAccess(topics.kafka_bootstrap, "SASL_PLAINTEXT", "SCRAM-SHA-512", "notify", "not-its-password")
    impostor = AIOKafkaProducer(**wrong.options(), request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await impostor.start()
    await impostor.stop()
    # The same principal with its own password gets in.
    notify = AIOKafkaProducer(**topics.kafka_options("notify"), request_timeout_ms=5000)
    await notify.start()
    await notify.stop()


async def test_a_service_cannot_write_or_read_outside_its_acls(topics: Infra) -> None:
    notify = AIOKafkaProducer(**topics.kafka_options("notify"), request_timeout_ms=5000)
    await notify.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            await notify.send_and_wait(REFERRAL_EVENTS.name, b"forged referral event")
        await notify.send_and_wait(DEAD_LETTERS.name, b"allowed: notify dead-letters its poison records")
    finally:
        await notify.stop()

    # indicators reads the event log but not the matcher's decisions, nor the dead letters.
    for topic in (MATCHING_EVENTS.name, DEAD_LETTERS.name):
        await refused_reading(topic, **topics.kafka_options("indicators"), group_id=f"reflexe-indicators-{uuid.uuid4().hex}")

    # notify may not join another service's consumer group, even on a topic it may read.
    intruder = AIOKafkaConsumer(REFERRAL_EVENTS.name, **topics.kafka_options("notify"), group_id="reflexe-matcher",
                                request_timeout_ms=5000)
    with pytest.raises(GroupAuthorizationFailedError):
        await intruder.start()
    await intruder.stop()


async def test_the_declared_acls_are_exactly_the_brokers(topics: Infra) -> None:
    from reflexe_common.kafka_acls import KafkaAdmin

    async with KafkaAdmin(topics.kafka()) as admin:
        for service in SERVICES:
            assert sorted(await admin.acls_of(service)) == service_acls(service), service


async def test_a_system_writes_its_own_inbound_topic_and_no_other(topics: Infra) -> None:
    mine = await register_system(topics, unique_finess(), "hospital")
    other = await register_system(topics, unique_finess(), "hospital")
    had = await register_system(topics, unique_finess(), "had")
    producer = AIOKafkaProducer(**as_system(topics, mine), request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(mine.topic, b"on its own topic")
        for foreign in (other.topic, had.topic, REFERRAL_EVENTS.name):
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait(foreign, b"as someone else")
    finally:
        await producer.stop()
    # Nor can it read anything, its own topic included.
    await refused_reading(mine.topic, **as_system(topics, mine), group_id=None)


@pytest.fixture(scope="module")
async def platform(topics: Infra):
    """referral and capacity in-process, each as its own Kafka principal."""
    async with referral_and_capacity_in_process(topics) as running:
        yield running.referral, running.capacity


def _submission(source_finess: str, submitted_by: str) -> submission_pb2.SubmitReferral:
    body = referral_body(source_finess)
    request = ReferralIn.model_validate(body).to_domain("34", body["referral_id"], datetime.now(UTC))
    return submission_pb2.SubmitReferral(request=request_to_proto(request), submitted_by=submitted_by)


async def _publish(topics: Infra, system, message) -> str:
    envelope = wrap(message, f"system/{system.principal}")
    producer = AIOKafkaProducer(**as_system(topics, system), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(system.topic, envelope.value(), headers=envelope.headers())
    finally:
        await producer.stop()
    return envelope.id


async def _dead_letter(topics: Infra, event_id: str) -> dict[str, bytes]:
    [record] = await dead_letters(topics, lambda r: dict(r.headers).get("ce_id") == event_id.encode(),
                                  what=f"event {event_id} on the dead-letter topic")
    return dict(record.headers)


async def test_a_referral_claiming_another_hospital_is_dead_lettered_and_its_own_is_taken(platform, topics: Infra) -> None:
    referral, _ = platform
    sender, victim = unique_finess(), unique_finess()
    system = await register_system(topics, sender, "hospital")

    forged = _submission(victim, submitted_by=victim)  # consistent with itself, but not its sender's
    forged_id = await _publish(topics, system, forged)
    headers = await _dead_letter(topics, forged_id)
    assert headers["dlq_reason"].decode().startswith(SENDER_MISMATCH)
    assert victim in headers["dlq_reason"].decode() and sender in headers["dlq_reason"].decode()
    assert headers["dlq_topic"] == system.topic.encode()
    assert headers["dlq_consumer"] == b"referral-submissions"

    own = _submission(sender, submitted_by=sender)
    await _publish(topics, system, own)

    async def taken():
        response = await referral.get(f"/v1/referrals/{own.request.referral_id}", headers=token("hospital", finess=sender))
        return response if response.status_code == 200 else None
    response = await eventually(taken, timeout=30, what="the sender's own referral processed")
    assert response.json()["status"] in ("REQUESTED", "OFFERED", "ESCALATED")
    # The forged one never became a referral.
    missing = await referral.get(f"/v1/referrals/{forged.request.referral_id}", headers=token("hospital", finess=victim))
    assert missing.status_code == 404


async def test_a_capacity_declaration_for_another_had_is_dead_lettered_and_its_own_is_taken(platform, topics: Infra) -> None:
    _, capacity = platform
    sender, victim = unique_finess(), unique_finess()
    for finess in (sender, victim):
        registered = await capacity.put(f"/v1/hads/{finess}", json=had_body(f"HAD {finess}", [own_commune()]), headers=token("admin"))
        assert registered.status_code == 200, registered.text
    system = await register_system(topics, sender, "had")

    def declaration(had: str, places: int) -> capacity_pb2.DeclareCapacity:
        return capacity_pb2.DeclareCapacity(had_finess=had, places_available=places, admissions_possible_today=0,
                                            status="OPEN", declared_at=ts(datetime.now(UTC)))

    forged_id = await _publish(topics, system, declaration(victim, 0))  # closing a competitor
    headers = await _dead_letter(topics, forged_id)
    assert headers["dlq_reason"].decode().startswith(SENDER_MISMATCH)
    assert headers["dlq_topic"] == system.topic.encode()

    await _publish(topics, system, declaration(sender, 6))

    async def history(finess: str):
        response = await capacity.get(f"/v1/hads/{finess}/capacity/history", headers=token("had", finess=finess))
        assert response.status_code == 200, response.text
        return response.json()["declarations"] or None
    assert [d["places_available"] for d in await eventually(lambda: history(sender), timeout=30,
                                                            what="the sender's own declaration")] == [6]
    assert await history(victim) is None
