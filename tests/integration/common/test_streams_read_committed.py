"""A faust stream reads only committed records: the records of a Kafka transaction that was
aborted (an outbox relay fenced or failing mid-batch) are never handled; those of a committed
one are, on a real broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import faust
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import referral_pb2

from reflexe_common.db import create_pool, migrate
from reflexe_common.envelope import Envelope, ts, wrap
from reflexe_common.inbox import DeadLetters, RecordProcessor
from reflexe_common.streams import stream_app
from reflexe_common.topics import Topic, ensure_topics
from tests.support.services import eventually

pytestmark = pytest.mark.integration


def _event(why: str) -> Envelope:
    message = referral_pb2.ReferralEscalated(header=referral_pb2.ReferralEventHeader(
        referral_id=str(uuid.uuid4()), department="34", occurred_at=ts(datetime.now(UTC))), why=why)
    return wrap(message, "test/streams")


async def _in_transaction(producer: AIOKafkaProducer, topic: str, envelope: Envelope, commit: bool) -> None:
    await producer.begin_transaction()
    await (await producer.send(topic, envelope.value(), key=b"34", headers=envelope.headers()))
    if commit:
        await producer.commit_transaction()
    else:
        await producer.abort_transaction()


async def _handled_by_a_stream(topics, read_committed: bool) -> tuple[list[str], Envelope, Envelope]:
    """Runs a stream over a topic of its own holding an aborted, then a committed, transaction;
    returns the event ids the stream handled once the committed one was handled."""
    suffix = uuid.uuid4().hex[:8]
    topic = Topic(f"test.streams.{suffix}", 1)
    await ensure_topics(topics.kafka(), (topic,))
    schema = f"streams_test_{suffix}"
    pool: asyncpg.Pool = await create_pool(topics.database_url, schema)
    await migrate(pool, schema, "reflexe_common.sql")  # the inbox alone
    dead_letters = DeadLetters(topics.kafka())
    await dead_letters.start()
    producer = AIOKafkaProducer(**topics.kafka_options(), transactional_id=f"test-streams-{suffix}",
                                enable_idempotence=True)
    await producer.start()
    handled: list[str] = []
    aborted, committed = _event("aborted"), _event("committed")

    async def committed_handled() -> bool:
        return committed.id in handled

    async def handle(_conn: asyncpg.Connection, envelope: Envelope) -> None:
        handled.append(envelope.id)

    app = stream_app(f"test-streams-{suffix}", topics.kafka(), [topic],
                     RecordProcessor(f"test-streams-{suffix}", pool, dead_letters, handle), "test")
    if not read_committed:
        # faust's own aiokafka transport, as processing_guarantee="at_least_once" builds it.
        app.transport = faust.transport.by_url("kafka://")(app.conf.broker_consumer, app)
    try:
        await _in_transaction(producer, topic.name, aborted, commit=False)
        await _in_transaction(producer, topic.name, committed, commit=True)
        await app.start()
        await eventually(committed_handled, timeout=60, what="the committed record handled")
        return list(handled), aborted, committed
    finally:
        await app.stop()
        await producer.stop()
        await dead_letters.stop()
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()


async def test_a_stream_never_handles_an_aborted_transaction_and_handles_a_committed_one(topics):
    handled, aborted, committed = await _handled_by_a_stream(topics, read_committed=True)
    # The aborted record precedes the committed one in the partition: had it been delivered, it
    # would have been handled first.
    assert handled == [committed.id]
    assert aborted.id not in handled


async def test_faust_at_least_once_alone_would_handle_the_aborted_transaction(topics):
    """Why stream_app replaces faust's transport: without it, the aborted record is handled. When
    this fails, faust reads committed records by itself and ReadCommittedTransport can go."""
    handled, aborted, committed = await _handled_by_a_stream(topics, read_committed=False)
    assert handled == [aborted.id, committed.id]
