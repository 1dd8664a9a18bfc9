"""Faust stream processors feeding a topic to a RecordProcessor, at least once.

The processor's inbox makes redeliveries harmless and keeps state in PostgreSQL, so faust needs
no tables (a restart cannot lose state) and no topic declaration (reflexe_common.topics owns it).
"""

from __future__ import annotations

import faust

from reflexe_common.inbox import Record, RecordProcessor
from reflexe_common.topics import Topic


def stream_app(group: str, bootstrap: str, topic: Topic, processor: RecordProcessor, instance: str) -> faust.App:
    app = faust.App(
        group,
        broker=f"kafka://{bootstrap}",
        processing_guarantee="at_least_once",
        web_enabled=False,
        store="memory://",
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_client_id=f"{group}-{instance}",
    )
    source = app.topic(topic.name, value_serializer="raw", key_serializer="raw", partitions=topic.partitions)

    @app.agent(source, name=processor.consumer)
    async def process(stream):
        async for event in stream.events():
            msg = event.message
            await processor.process(Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value, list(msg.headers or ())))

    return app
