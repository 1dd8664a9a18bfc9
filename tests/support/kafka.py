"""Reading what is really on a topic (read_committed, as every platform consumer reads)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from reflexe_capacity.entrypoints.app import MATCHER_GROUP
from reflexe_referral.entrypoints.app import MATCHING_GROUP
from reflexe_common import kafka_acls
from reflexe_common.envelope import Envelope, PoisonRecord, unwrap
from reflexe_common.kafka_acls import RegisteredSystem
from reflexe_common.topics import ALL_TOPICS, DEAD_LETTERS, MATCHING_EVENTS, REFERRAL_EVENTS, Topic
from tests.support.infra import Infra
from tests.support.services import eventually


async def read_all(infra: Infra, topic: str, predicate: Callable[[Envelope], bool] = lambda e: True) -> list[Envelope]:
    """Every committed record of the topic from the beginning up to its current end (read as the
    super user)."""
    return [e for e, _ in await read_all_with_partitions(infra, topic) if predicate(e)]


async def read_all_with_partitions(infra: Infra, topic: str) -> list[tuple[Envelope, int]]:
    """Every committed record of the topic with the partition it is on."""
    partitions = next(t.partitions for t in ALL_TOPICS if t.name == topic)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer = AIOKafkaConsumer(**infra.kafka_options(), isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        found: list[tuple[Envelope, int]] = []

        async def behind() -> bool:
            for tp in tps:
                if await consumer.position(tp) < end[tp]:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(*tps, timeout_ms=500)
            for records in batch.values():
                for r in records:
                    try:
                        envelope = unwrap(list(r.headers), r.value)
                    except PoisonRecord:
                        continue
                    found.append((envelope, r.partition))
        return found
    finally:
        await consumer.stop()


async def dead_letters(infra: Infra, matching: Callable[[ConsumerRecord], bool], what: str,
                       timeout: float = 30) -> list[ConsumerRecord]:
    """The records of the dead-letter topic that `matching` accepts, read from its beginning until
    at least one is there. Raw records: what was dead-lettered may not even decode."""
    consumer = AIOKafkaConsumer(DEAD_LETTERS.name, **infra.kafka_options(), auto_offset_reset="earliest",
                                isolation_level="read_committed", enable_auto_commit=False)
    await consumer.start()
    found: list[ConsumerRecord] = []
    try:
        async def arrived() -> list[ConsumerRecord]:
            batch = await consumer.getmany(timeout_ms=200)
            found.extend(r for records in batch.values() for r in records if matching(r))
            return found

        return await eventually(arrived, timeout=timeout, what=what)
    finally:
        await consumer.stop()


async def follow_from_end(kafka: dict[str, Any], topic: Topic, ready: asyncio.Event, *, poll_ms: int = 100,
                          **consumer_options: Any) -> AsyncIterator[tuple[float, list[ConsumerRecord]]]:
    """The committed records of every partition of `topic` written from now on, batch by batch,
    each with the time.perf_counter() it was fetched at, for as long as the caller iterates. No
    consumer group: a watcher beside the platform's own consumers. `ready` is set once the end of
    every partition is pinned (seek_to_end is lazy), so nothing produced after it can be missed."""
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer = AIOKafkaConsumer(**kafka, isolation_level="read_committed", enable_auto_commit=False,
                                **consumer_options)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)
        ready.set()
        while True:
            for records in (await consumer.getmany(*partitions, timeout_ms=poll_ms)).values():
                yield time.perf_counter(), records
    finally:
        await consumer.stop()


async def register_system(infra: Infra, finess: str, kind: str) -> RegisteredSystem:
    """A hospital (kind hospital) or HAD (kind had) information system, registered as the
    platform registers one: its principal, its own inbound topic, its ACLs."""
    return await kafka_acls.register_system(infra.kafka(), finess, kind)


def as_system(infra: Infra, system: RegisteredSystem) -> dict[str, Any]:
    """aiokafka keyword arguments of that system's own connection."""
    return infra.kafka().as_principal(system.principal, system.password).options()


async def group_members(kafka: dict[str, Any], group: str) -> list[str]:
    """The live members of a consumer group, as "client id @ host"."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    return [f"{m['client_id']}@{m['client_host']}" for r in responses for g in r.to_object()["groups"]
            for m in g["members"]]


async def mark_caught_up(kafka: dict[str, Any], group: str, topic, timeout: float = 60) -> None:
    """Commit the end of the log for a consumer group once it has no live member: a service started
    afterwards begins with what comes next, not with a backlog other tests left behind. A member of
    an earlier test's process that was killed stays in the group until its session times out: wait
    for it (a commit from outside a group with members is refused)."""
    async def empty() -> bool:
        try:
            return not await group_members(kafka, group)
        except KafkaError:  # e.g. the coordinator not yet elected on a broker that just started
            return False

    try:
        await eventually(empty, timeout=timeout, interval=0.5, what=f"consumer group {group} without members")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its members: {await group_members(kafka, group)}") from None
    consumer = AIOKafkaConsumer(**kafka, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
        consumer.assign(tps)
        end = await consumer.end_offsets(tps)
        await consumer.commit({tp: OffsetAndMetadata(end[tp], "") for tp in tps})
    finally:
        await consumer.stop()


async def matching_starts_from_now(infra: Infra) -> None:
    """The matcher and the referral service a test is about to start begin with the referrals
    posted from then on, and with the decisions made from then on. What other tests posted while
    neither ran is not this test's, and working through it first could take minutes: the test's
    first offer (or escalation) came late or not at all, depending on which tests ran before it."""
    await mark_caught_up(infra.kafka_options(), MATCHER_GROUP, REFERRAL_EVENTS)
    await mark_caught_up(infra.kafka_options(), MATCHING_GROUP, MATCHING_EVENTS)
