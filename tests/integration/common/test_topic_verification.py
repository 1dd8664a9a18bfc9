"""On the real broker: a service that may not create topics (REFLEXE_KAFKA_CREATE_TOPICS=false,
as in the Kubernetes deployment) stops on a missing topic, naming it, and creates nothing; once the
topic exists (declared by the operator, here created by a service that may), it starts."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from reflexe_common.topics import MissingTopics, Topic, ensure_topics

pytestmark = pytest.mark.integration


async def topic_exists(infra, name: str) -> bool:
    admin = AIOKafkaAdminClient(**infra.kafka().options())
    await admin.start()
    try:
        return name in await admin.list_topics()
    finally:
        await admin.close()


async def test_a_service_that_may_not_create_topics_stops_on_a_missing_one(infra) -> None:
    topic = Topic(f"reflexe.test.verify-{uuid.uuid4().hex[:10]}", 2)
    with pytest.raises(MissingTopics) as raised:
        await ensure_topics(infra.kafka(), (topic,), create=False)
    assert raised.value.names == [topic.name]
    assert not await topic_exists(infra, topic.name), "verifying never creates"
    await ensure_topics(infra.kafka(), (topic,), create=True)
    assert await topic_exists(infra, topic.name)
    await ensure_topics(infra.kafka(), (topic,), create=False)  # there now: it starts
    with pytest.raises(RuntimeError, match="partitions"):
        await ensure_topics(infra.kafka(), (Topic(topic.name, 3),), create=False)
