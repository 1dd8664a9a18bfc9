"""Real Kafka and PostgreSQL for the notify tests, on ports of their own.

Set REFLEXE_NOTIFY_INFRA_DIR to a state dir to reuse an infrastructure already running there
(deploy/local/infra.sh start with the same ports) and keep it afterwards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from reflexe_common.topics import ensure_topics
from tests.support.infra import Infra, make_state_dir, start_infra, stop_infra

KAFKA_PORT, CONTROLLER_PORT, PG_PORT = 39192, 39193, 35432


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    reuse = os.environ.get("REFLEXE_NOTIFY_INFRA_DIR")
    state_dir = Path(reuse) if reuse else make_state_dir("reflexe-notify-test-")
    started = start_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
    try:
        yield started
    finally:
        if not reuse:
            stop_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)


@pytest.fixture(scope="session")
async def producer(infra: Infra) -> AsyncIterator[AIOKafkaProducer]:
    await ensure_topics(infra.kafka_bootstrap)
    p = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, acks="all", linger_ms=0)
    await p.start()
    yield p
    await p.stop()
