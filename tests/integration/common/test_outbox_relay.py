"""The outbox relay publishes every stored event exactly once, even when it dies between the
Kafka commit and its own bookkeeping (the window a plain at-least-once relay duplicates in)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import referral_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_common.outbox import OutboxRelay, enqueue
from reflexe_common.partitioning import department_partition
from reflexe_common.topics import REFERRAL_EVENTS
from tests.support.kafka import read_all, read_all_with_partitions
from tests.support.schema import own_schema
from tests.support.services import eventually

pytestmark = pytest.mark.integration


class Crash(Exception):
    """Stands for the process dying at that exact point."""


async def _store_events(pool: asyncpg.Pool, n: int) -> list[str]:
    ids = []
    async with pool.acquire() as conn, conn.transaction():
        for _ in range(n):
            message = referral_pb2.ReferralEscalated(header=referral_pb2.ReferralEventHeader(
                referral_id=str(uuid.uuid4()), department="34", occurred_at=ts(datetime.now(UTC))), why="test")
            envelope = wrap(message, "test/outbox")
            await enqueue(conn, REFERRAL_EVENTS.name, "34", envelope)
            ids.append(envelope.id)
    return ids


async def _published_ids(infra, ids: list[str]) -> list[str]:
    """The ids among `ids` a read_committed reader sees, once it sees them all: a commit returns
    before its markers reach every partition (and, on a cluster, every in-sync replica)."""
    wanted = set(ids)

    async def every_one() -> list[str] | None:
        seen = [e.id for e in await read_all(infra, REFERRAL_EVENTS.name, lambda e: e.id in wanted)]
        return seen if set(seen) == wanted else None

    return await eventually(every_one, timeout=30, interval=0.2, what=f"{len(ids)} events readable")


async def test_a_crash_after_the_kafka_commit_does_not_publish_twice(topics):
    async with own_schema(topics.database_url, "outbox_test", "reflexe_common.sql") as (schema, pool):
        ids = await _store_events(pool, 25)
        crashed = OutboxRelay(topics.database_url, schema, topics.kafka())

        async def crash(*_args, **_kwargs):
            raise Crash

        crashed._mark = crash  # dies after the Kafka commit, before marking the rows published
        producer = AIOKafkaProducer(**topics.kafka_options(), transactional_id=f"reflexe-{schema}-outbox-relay",
                                    enable_idempotence=True)
        await producer.start()
        with pytest.raises(Crash):
            await crashed._publish(producer, await crashed._next_batch(pool), pool)
        await producer.stop()
        assert sorted(await _published_ids(topics, ids)) == sorted(ids)  # on Kafka, unmarked in PG
        assert await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 25

        await _relay_until_all_marked(topics, schema, pool, timeout=30, what="the batch recovered")
        published = await _published_ids(topics, ids)
        assert sorted(published) == sorted(ids), "each event exactly once"
        assert await pool.fetchval("SELECT state FROM outbox_batches") == "DONE"


async def test_a_crash_before_the_kafka_commit_publishes_the_batch_once_after_restart(topics):
    async with own_schema(topics.database_url, "outbox_test", "reflexe_common.sql") as (schema, pool):
        ids = await _store_events(pool, 10)
        producer = AIOKafkaProducer(**topics.kafka_options(), transactional_id=f"reflexe-{schema}-outbox-relay",
                                    enable_idempotence=True)
        await producer.start()
        # The dead relay's transaction: records sent and journalled, never committed nor aborted.
        await producer.begin_transaction()
        relay = OutboxRelay(topics.database_url, schema, topics.kafka())
        rows = await relay._next_batch(pool)
        sent = [await producer.send(r.topic, r.payload, key=r.key.encode(), headers=r.headers) for r in rows]
        first = await sent[0]
        await asyncio.gather(*sent[1:])
        await pool.execute("INSERT INTO outbox_batches (batch_id, outbox_ids, probe_topic, probe_partition, probe_offset, state) "
                           "VALUES ($1, $2, $3, $4, $5, 'SENDING')", uuid.uuid4(), [r.id for r in rows], first.topic,
                           first.partition, first.offset)
        # No stop(): the process vanished. The restarted relay's producer fences it.
        await _relay_until_all_marked(topics, schema, pool, timeout=60, what="the batch resent")
        assert sorted(await _published_ids(topics, ids)) == sorted(ids)
        assert await pool.fetchval("SELECT count(*) FROM outbox_batches WHERE state = 'ABORTED'") == 1


async def _all_marked(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def _relay_until_all_marked(topics, schema: str, pool: asyncpg.Pool, timeout: float, what: str) -> None:
    """A relay of the schema (a restarted one, where a test crashed another) runs until every stored
    event is marked published."""
    task = asyncio.create_task(OutboxRelay(topics.database_url, schema, topics.kafka()).run())
    try:
        await eventually(lambda: _all_marked(pool), timeout=timeout, what=what)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_relay_puts_each_department_on_its_partition_of_the_table(topics):
    departments = ("59", "48", "2A", "971", "75", "13")
    async with own_schema(topics.database_url, "outbox_test", "reflexe_common.sql") as (schema, pool):
        sent: dict[str, str] = {}
        async with pool.acquire() as conn, conn.transaction():
            for department in departments:
                message = referral_pb2.ReferralEscalated(header=referral_pb2.ReferralEventHeader(
                    referral_id=str(uuid.uuid4()), department=department, occurred_at=ts(datetime.now(UTC))), why="test")
                envelope = wrap(message, "test/outbox")
                await enqueue(conn, REFERRAL_EVENTS.name, department, envelope)
                sent[envelope.id] = department
        await _relay_until_all_marked(topics, schema, pool, timeout=30, what="the events published")
        landed = {e.id: partition for e, partition in await read_all_with_partitions(topics, REFERRAL_EVENTS.name)
                  if e.id in sent}
        assert landed == {event_id: department_partition(department) for event_id, department in sent.items()}
        assert len(set(landed.values())) > 1, "the departments chosen are spread over several partitions"
