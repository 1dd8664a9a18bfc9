"""Fixtures of the notify tests, on the session's real Kafka and PostgreSQL (tests/conftest.py): the
producer, a client of the module's own notify app and its URL on a real socket, and the webhook
receivers a test starts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.support.infra import Infra
from tests.support.receiver import WebhookReceiver
from tests.support.services import serve_in_process


@pytest.fixture(scope="session")
async def producer(topics: Infra) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(**topics.kafka_options(), acks="all", linger_ms=0)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture(scope="module")
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's own notify app (each module builds `app` with the settings it tests)."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify") as c:
        yield c


@pytest.fixture(scope="module")
async def url(app: Any) -> AsyncIterator[str]:
    """The module's notify app on a real socket: streams need one (ASGITransport buffers whole answers)."""
    async with serve_in_process(app, lifespan=False) as base:
        yield base


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as r:
        yield r


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[WebhookReceiver]]]:
    """Starts receivers as the test asks (`await receivers(host=..., answer=...)`)."""
    started: list[WebhookReceiver] = []

    async def make(**settings: Any) -> WebhookReceiver:
        started.append(await WebhookReceiver(**settings).start())
        return started[-1]

    yield make
    for r in started:
        await r.stop()
