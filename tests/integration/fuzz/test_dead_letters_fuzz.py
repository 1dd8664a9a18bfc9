"""Generated bad records on the real broker: every consumed topic (the three event logs and both
kinds of inbound topic) gets a sample of records Hypothesis generated that the envelope refuses;
every consumer of that topic must put each one on reflexe.deadletter.v1 with a `dlq_reason`,
and keep going: good records published after them are still processed (their event ids land in
each consumer's inbox, or their effect is visible through the API).

The whole platform runs as separate processes, as in production. REFLEXE_FUZZ_DEAD_LETTERS sets
the bad records per topic (default 5).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from hypothesis import HealthCheck, given, settings
from reflexe.v1 import capacity_pb2, submission_pb2

from reflexe_common.envelope import PoisonRecord, ts, unwrap, wrap
from reflexe_common.kafka_acls import register_system
from reflexe_common.topics import CAPACITY_EVENTS, DEAD_LETTERS, MATCHING_EVENTS, REFERRAL_EVENTS
from reflexe_referral.adapters.codec import request_to_proto
from reflexe_referral.entrypoints.schemas import ReferralIn
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.fuzz_records import records
from tests.support.kafka import read_all
from tests.support.platform import running_platform
from tests.support.services import eventually, token
from tests.support.territory import own_commune

pytestmark = pytest.mark.integration

PER_TOPIC = int(os.environ.get("REFLEXE_FUZZ_DEAD_LETTERS", "5"))
DEPARTMENT = "34"
COMMUNE = own_commune()
# Who consumes what: (schema, consumer name as the dead letters and the inbox record it).
CONSUMERS = {
    REFERRAL_EVENTS.name: [("capacity", "matcher"), ("indicators", "indicators-facts"), ("notify", "notify")],
    MATCHING_EVENTS.name: [("referral", "referral-matching"), ("notify", "notify")],
    CAPACITY_EVENTS.name: [("indicators", "reflexe-indicators-capacity"), ("notify", "notify")],
}


def bad_records(count: int, seed: int) -> list[tuple[list, bytes | None]]:
    """`count` generated records the envelope refuses (derandomized: the same every run)."""
    found: list = []

    @settings(max_examples=50 * count, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(record=records())
    def collect(record):
        if len(found) >= count * (seed + 1):
            return
        # As the client sends them: header values are bytes (a null one becomes empty).
        headers, value = [(k, v if v is not None else b"") for k, v in record[0]], record[1]
        try:
            unwrap(headers, value)
        except PoisonRecord:
            found.append((headers, value))

    collect()
    return found[count * seed:count * (seed + 1)]


async def _publish(producer: AIOKafkaProducer, topic: str, batch) -> list[tuple[str, int, int]]:
    sent = []
    for headers, value in batch:
        meta = await producer.send_and_wait(topic, value, key=DEPARTMENT.encode(), headers=headers)
        sent.append((topic, meta.partition, meta.offset))
    return sent


async def _dead_letters(infra) -> dict[tuple[str, str, int, int], bytes]:
    """(consumer, topic, partition, offset) → dlq_reason of every dead letter so far."""
    tps = [TopicPartition(DEAD_LETTERS.name, p) for p in range(DEAD_LETTERS.partitions)]
    consumer = AIOKafkaConsumer(**infra.kafka_options(), enable_auto_commit=False)
    await consumer.start()
    found = {}
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)

        async def behind() -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while await behind():
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                for r in batch:
                    h = dict(r.headers)
                    if "dlq_consumer" in h:
                        found[(h["dlq_consumer"].decode(), h["dlq_topic"].decode(), int(h["dlq_partition"]),
                               int(h["dlq_offset"]))] = h.get("dlq_reason", b"")
    finally:
        await consumer.stop()
    return found


async def _in_inbox(infra, schema: str, consumer: str, event_id: str) -> bool:
    conn = await asyncpg.connect(infra.database_url)
    try:
        return bool(await conn.fetchval(f'SELECT 1 FROM "{schema}".inbox WHERE consumer = $1 AND event_id = $2',
                                        consumer, event_id))
    finally:
        await conn.close()


async def test_bad_records_on_every_consumed_topic_are_dead_lettered_and_good_ones_still_flow(topics, tmp_path_factory):
    hospital_finess, had_finess = unique_finess(DEPARTMENT), unique_finess(DEPARTMENT)
    hospital = await register_system(topics.kafka(), hospital_finess, "hospital")
    had = await register_system(topics.kafka(), had_finess, "had")
    expected: dict[tuple[str, int, int], list[str]] = {}
    async with running_platform(topics, tmp_path_factory.mktemp("fuzz-dlq")) as platform:
        admin = AIOKafkaProducer(**topics.kafka_options())
        as_hospital = AIOKafkaProducer(**topics.kafka().as_principal(hospital.principal, hospital.password).options())
        as_had = AIOKafkaProducer(**topics.kafka().as_principal(had.principal, had.password).options())
        for producer in (admin, as_hospital, as_had):
            await producer.start()
        try:
            for seed, (topic, consumers) in enumerate(CONSUMERS.items()):
                for sent in await _publish(admin, topic, bad_records(PER_TOPIC, seed)):
                    expected[sent] = [name for _, name in consumers]
            for sent in await _publish(as_hospital, hospital.topic, bad_records(PER_TOPIC, 3)):
                expected[sent] = ["referral-submissions"]
            for sent in await _publish(as_had, had.topic, bad_records(PER_TOPIC, 4)):
                expected[sent] = ["capacity-declarations"]

            # Good records after the bad ones: a referral submitted on Kafka, a declaration on Kafka.
            async with httpx.AsyncClient(base_url=platform["capacity"].url, timeout=30) as capacity, \
                    httpx.AsyncClient(base_url=platform["referral"].url, timeout=30) as referral:
                registered = await capacity.put(f"/v1/hads/{had_finess}", json=had_body(f"HAD {had_finess}", [COMMUNE]),
                                                headers=token("admin"))
                assert registered.status_code == 200, registered.text
                declaration = capacity_pb2.DeclareCapacity(had_finess=had_finess, places_available=3,
                                                           admissions_possible_today=1, status="OPEN",
                                                           declared_at=ts(datetime.now(UTC)))
                envelope = wrap(declaration, f"system/{had.principal}")
                await as_had.send_and_wait(had.topic, envelope.value(), key=DEPARTMENT.encode(), headers=envelope.headers())
                body = referral_body(hospital_finess)
                request = ReferralIn.model_validate(body).to_domain(DEPARTMENT, body["referral_id"], datetime.now(UTC))
                submission = wrap(submission_pb2.SubmitReferral(request=request_to_proto(request),
                                                                submitted_by=hospital_finess), f"system/{hospital.principal}")
                await as_hospital.send_and_wait(hospital.topic, submission.value(), key=DEPARTMENT.encode(),
                                                headers=submission.headers())

                async def referral_created():
                    answer = await referral.get(f"/v1/referrals/{body['referral_id']}",
                                                headers=token("hospital", finess=hospital_finess))
                    return answer.status_code == 200

                await eventually(referral_created, timeout=60, what="the referral submitted on Kafka after bad records")

                async def declared():
                    history = await capacity.get(f"/v1/hads/{had_finess}/capacity/history", headers=token("admin"))
                    return history.status_code == 200 and history.json()["declarations"]

                await eventually(declared, timeout=60, what="the declaration published on Kafka after bad records")
        finally:
            for producer in (admin, as_hospital, as_had):
                await producer.stop()

        # Every bad record reached the dead-letter topic once per consumer, with its reason.
        async def all_dead_lettered():
            letters = await _dead_letters(topics)
            missing = [(c, *where) for where, consumers in expected.items() for c in consumers
                       if (c, *where) not in letters]
            return letters if not missing else None

        letters = await eventually(all_dead_lettered, timeout=90, interval=1, what="every bad record dead-lettered")
        for where, consumers in expected.items():
            for consumer in consumers:
                assert letters[(consumer, *where)], f"no dlq_reason for {(consumer, *where)}"

        # The event-log consumers kept going too: the referral's events reached every inbox.
        [requested] = await read_all(topics, REFERRAL_EVENTS.name,
                                     lambda e: e.type == "reflexe.v1.ReferralRequested"
                                     and e.message.header.referral_id == body["referral_id"])
        decisions = await eventually(lambda: read_all(topics, MATCHING_EVENTS.name,
                                                      lambda e: getattr(e.message, "referral_id", "") == body["referral_id"]),
                                     timeout=60, what="the matcher's decision on the referral")
        [capacity_event, *_] = await eventually(lambda: read_all(topics, CAPACITY_EVENTS.name,
                                                             lambda e: getattr(e.message, "had_finess", "") == had_finess),
                                            timeout=60, what="the capacity event of the declaration")
        for topic, event_id in ((REFERRAL_EVENTS.name, requested.id), (MATCHING_EVENTS.name, decisions[0].id),
                                (CAPACITY_EVENTS.name, capacity_event.id)):
            for schema, consumer in CONSUMERS[topic]:
                await eventually(lambda: _in_inbox(topics, schema, consumer, event_id), timeout=60,
                                 what=f"{consumer} handling {event_id} from {topic}")
    print(f"\n{len(expected)} generated bad records, "
          f"{sum(len(c) for c in expected.values())} dead letters checked with their reasons")
