"""The local Kafka cluster that looks like production (deploy/local/infra.sh, REFLEXE_KAFKA_NODES=3):
three KRaft nodes behind SASL and ACLs, topics with three replicas of which two must be in sync,
and a node killed with SIGKILL loses no acknowledged write and stops neither producing nor
consuming; started again, it rejoins every in-sync replica set.

The cluster has its own state dir and ports (node N on KAFKA_PORT+2(N-1)), so it disturbs neither
the session's broker nor a developer's.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from reflexe_common.topics import ALL_TOPICS, Topic, ensure_topics
from tests.support.infra import Infra, private_infra, run_infra_sh
from tests.support.services import eventually

_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))  # see tests/conftest.py
KAFKA_PORT = 31092 + _OFFSET  # nodes on 31092, 31094, 31096
CONTROLLER_PORT = 31093 + _OFFSET  # quorum on 31093, 31095, 31097
PG_PORT = 27432 + _OFFSET
NODES = 3
TRANSACTIONS = 5  # per round, one record each
# Covers the fencing of a dead broker (broker.session.timeout.ms, 9 s) and the election of new
# leaders and coordinators, on a loaded machine.
FAILOVER_TIMEOUT_S = 90

pytestmark = pytest.mark.integration


state_dir, cluster = private_infra("cluster", "reflexe-cluster-test-", KAFKA_PORT, CONTROLLER_PORT, PG_PORT,
                                   kafka_nodes=NODES)


def infra_sh(state_dir: Path, *command: str) -> str:
    return run_infra_sh(command[0], state_dir, 240, KAFKA_PORT, CONTROLLER_PORT, PG_PORT, *command[1:])


@asynccontextmanager
async def admin_client(cluster: Infra) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**cluster.kafka_options())
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partitions(admin: AIOKafkaAdminClient, *topics: str) -> dict[tuple[str, int], dict]:
    """(topic, partition) -> its description (leader, replicas, isr), once the broker asked knows
    every topic (its metadata can lag the controller's for a moment after a creation)."""

    async def known() -> list[dict] | None:
        described = await admin.describe_topics(list(topics))
        return None if any(d.get("error_code") for d in described) else described

    described = await eventually(known, timeout=30, what=f"the brokers' metadata of {topics}")
    return {(d["topic"], p["partition"]): p for d in described for p in d["partitions"]}


async def topic_config(admin: AIOKafkaAdminClient, topic: str, name: str) -> str:
    [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {name: None})])
    [(_, _, _, _, entries)] = response.resources
    return next(entry[1] for entry in entries if entry[0] == name)


async def produce_transactions(producer: AIOKafkaProducer, topic: str, values: list[bytes]) -> None:
    """One transaction per record, as the outbox relay commits its batches."""
    for value in values:
        async with producer.transaction():
            await producer.send_and_wait(topic, value, key=value)


async def consume(consumer: AIOKafkaConsumer, expected: set[bytes], seen: set[bytes]) -> set[bytes]:
    async def probe() -> bool:
        batches = await consumer.getmany(timeout_ms=500)
        seen.update(record.value for records in batches.values() for record in records)
        return expected <= seen

    await eventually(probe, timeout=FAILOVER_TIMEOUT_S, interval=0, what=f"{len(expected)} records consumed")
    return seen


async def test_status_and_env_name_every_node(cluster: Infra, state_dir: Path) -> None:
    # Neither needs REFLEXE_KAFKA_NODES: the state dir keeps its node count.
    status = infra_sh(state_dir, "status")
    for node in range(1, NODES + 1):
        assert f"kafka-{node}:    running (pid" in status, status
    assert cluster.kafka_bootstrap == ",".join(f"127.0.0.1:{KAFKA_PORT + 2 * n}" for n in range(NODES))
    assert (cluster.topic_replication_factor, cluster.topic_min_insync_replicas) == (3, 2)


async def test_the_platform_topics_have_three_replicas_two_in_sync(cluster: Infra) -> None:
    await ensure_topics(cluster.kafka(), settings=cluster.topic_settings())
    async with admin_client(cluster) as admin:
        described = await partitions(admin, *(t.name for t in ALL_TOPICS))
        assert {key[0] for key in described} == {t.name for t in ALL_TOPICS}
        for key, partition in described.items():
            assert len(partition["replicas"]) == 3, (key, partition)
        for t in ALL_TOPICS:
            assert await topic_config(admin, t.name, "min.insync.replicas") == "2"


async def test_a_killed_node_loses_nothing_and_rejoins(cluster: Infra, state_dir: Path) -> None:
    topic = Topic(f"cluster-test-{uuid.uuid4().hex[:8]}", 3)
    await ensure_topics(cluster.kafka(), (topic,), cluster.topic_settings())
    producer = AIOKafkaProducer(**cluster.kafka_options(), transactional_id=f"cluster-test-{uuid.uuid4().hex[:8]}",
                                enable_idempotence=True, acks="all")
    consumer = AIOKafkaConsumer(topic.name, **cluster.kafka_options(), group_id=f"cluster-test-{uuid.uuid4().hex[:8]}",
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    killed: int | None = None
    try:
        before = [f"before-{i}".encode() for i in range(TRANSACTIONS)]
        await produce_transactions(producer, topic.name, before)
        seen = await consume(consumer, set(before), set())

        async with admin_client(cluster) as admin:
            described = await partitions(admin, topic.name)
            assert all(len(p["replicas"]) == 3 and len(p["isr"]) == 3 for p in described.values()), described
            # The brokers' own topics, made by the transaction and the group above, are as safe.
            internal = await partitions(admin, "__consumer_offsets", "__transaction_state")
            assert all(len(p["replicas"]) == 3 for p in internal.values()), internal
            assert await topic_config(admin, "__transaction_state", "min.insync.replicas") == "2"
            assert await topic_config(admin, "__consumer_offsets", "min.insync.replicas") == "2"
            killed = described[(topic.name, 0)]["leader"]

        # The leader of partition 0 crashes: its partitions fail over to the two others.
        infra_sh(state_dir, "kafka-kill", str(killed))
        infra_sh(state_dir, "kafka-kill", str(killed))  # nothing to do for a node already dead
        after = [f"after-{i}".encode() for i in range(TRANSACTIONS)]
        await asyncio.wait_for(produce_transactions(producer, topic.name, after), FAILOVER_TIMEOUT_S)
        seen = await consume(consumer, set(before + after), seen)
        assert seen == set(before + after)  # read_committed: nothing else, no aborted record

        async with admin_client(cluster) as admin:
            described = await partitions(admin, topic.name)
            assert all(killed not in p["isr"] and p["leader"] != killed for p in described.values()), described

        # Back, it catches up and rejoins every in-sync replica set.
        infra_sh(state_dir, "kafka-start", str(killed))
        killed_node, killed = killed, None

        async def all_in_sync() -> dict | None:
            async with admin_client(cluster) as admin:
                described = await partitions(admin, topic.name, "__transaction_state")
            return described if all(killed_node in p["isr"] for p in described.values()) else None

        await eventually(all_in_sync, timeout=FAILOVER_TIMEOUT_S, interval=0.5,
                         what=f"node {killed_node} back in every in-sync replica set")
        # Nothing to do for a node already up.
        infra_sh(state_dir, "kafka-start", str(killed_node))
    finally:
        await consumer.stop()
        await producer.stop()
        if killed is not None:
            infra_sh(state_dir, "kafka-start", str(killed))
