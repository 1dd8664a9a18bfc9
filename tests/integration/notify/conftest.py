"""Fixtures of the notify tests, on the session's real Kafka and PostgreSQL (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from tests.support.infra import Infra


@pytest.fixture(scope="session")
async def producer(topics: Infra) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(**topics.kafka_options(), acks="all", linger_ms=0)
    await p.start()
    yield p
    await p.stop()
