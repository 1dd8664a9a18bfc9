"""The local infrastructure (deploy/local/infra.sh) really runs Kafka and PostgreSQL.

Uses non-default ports and a throwaway state dir, so it does not disturb a developer's
own `infra.sh start` on the default ports.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tests.support.infra import Infra, parse_exports, private_infra, run_infra_sh, start_infra
from tests.support.services import eventually

_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))  # see tests/conftest.py
KAFKA_PORT = 29092 + _OFFSET
CONTROLLER_PORT = 29093 + _OFFSET
PG_PORT = 25432 + _OFFSET


state_dir, infra = private_infra("infra", "reflexe-infra-test-", KAFKA_PORT, CONTROLLER_PORT, PG_PORT)


@pytest.mark.asyncio
async def test_kafka_create_topic_produce_consume(infra: Infra) -> None:
    topic = f"infra-smoke-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**infra.kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        # The controller answers the creation before every broker's metadata has the topic.
        async def listed() -> bool:
            return topic in await admin.list_topics()

        await eventually(listed, timeout=30, what=f"topic {topic} listed")
    finally:
        await admin.close()

    producer = AIOKafkaProducer(**infra.kafka_options(), acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"hello", key=b"k1")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **infra.kafka_options(),
        group_id=f"infra-smoke-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    assert (record.key, record.value) == (b"k1", b"hello")


@pytest.mark.asyncio
async def test_kafka_does_not_auto_create_topics(infra: Infra) -> None:
    topic = f"infra-missing-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(**infra.kafka_options(), request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await producer.send_and_wait(topic, b"lost")
    finally:
        await producer.stop()

    admin = AIOKafkaAdminClient(**infra.kafka_options())
    await admin.start()
    try:
        assert topic not in await admin.list_topics()
    finally:
        await admin.close()


@pytest.mark.asyncio
async def test_postgres_accepts_the_reflexe_user_over_tcp(infra: Infra) -> None:
    conn = await asyncpg.connect(infra.database_url, timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_user") == "reflexe"
        assert await conn.fetchval("SELECT current_database()") == "reflexe"
        await conn.execute("CREATE TEMP TABLE t (id int)")  # the role can use its database
    finally:
        await conn.close()


@pytest.mark.asyncio
async def test_postgres_rejects_a_wrong_password(infra: Infra) -> None:
    bad_url = infra.database_url.replace("reflexe:reflexe@", "reflexe:wrong@")
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(bad_url, timeout=10)


def test_start_again_is_quick_and_status_reports_both(infra: Infra, state_dir: Path) -> None:
    # Same state dir, servers already up: start must only check them.
    t0 = time.monotonic()
    assert start_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT) == infra
    assert time.monotonic() - t0 < 15

    status = run_infra_sh("status", state_dir, 60, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
    assert "kafka:      running (pid" in status
    assert "postgresql: running (pid" in status

    env = run_infra_sh("env", state_dir, 60, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
    assert parse_exports(env) == {**infra.kafka_env(with_admin=True), "DATABASE_URL": infra.database_url}
    assert len(env.splitlines()) == len(parse_exports(env))
