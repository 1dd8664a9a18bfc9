"""Every Kafka topic of the platform, declared once. The platform creates them (auto-creation is off).

Department-keyed flows share one partition count so that a department's referral, matching
and capacity events land on partitions with the same number, and a matcher instance that owns
a department owns all of its flows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)

DEPARTMENT_PARTITIONS = 6
FOREVER = "-1"


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# The event log is kept forever: indicators are rebuilt by replaying it from the beginning.
REFERRAL_EVENTS = Topic("reflexe.referral.events.v1", DEPARTMENT_PARTITIONS, {"retention.ms": FOREVER})
MATCHING_EVENTS = Topic("reflexe.matching.events.v1", DEPARTMENT_PARTITIONS, {"retention.ms": FOREVER})
CAPACITY_EVENTS = Topic("reflexe.capacity.events.v1", DEPARTMENT_PARTITIONS, {"retention.ms": FOREVER})
# Inbound commands from hospital and HAD information systems.
REFERRAL_SUBMISSIONS = Topic("reflexe.referral.submissions.v1", DEPARTMENT_PARTITIONS, {"retention.ms": str(14 * 86400_000)})
CAPACITY_DECLARATIONS = Topic("reflexe.capacity.declarations.v1", DEPARTMENT_PARTITIONS, {"retention.ms": str(14 * 86400_000)})
# Poison records, with the reason in headers; kept long enough for an operator to act.
DEAD_LETTERS = Topic("reflexe.deadletter.v1", 1, {"retention.ms": str(30 * 86400_000)})

ALL_TOPICS: tuple[Topic, ...] = (
    REFERRAL_EVENTS,
    MATCHING_EVENTS,
    CAPACITY_EVENTS,
    REFERRAL_SUBMISSIONS,
    CAPACITY_DECLARATIONS,
    DEAD_LETTERS,
)


async def ensure_topics(bootstrap: str, topics: tuple[Topic, ...] = ALL_TOPICS) -> None:
    """Create the missing topics; refuse to run on a topic whose partition count differs."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = await admin.describe_topics([t.name for t in topics])
        counts = {d["topic"]: len(d["partitions"]) for d in existing if not d.get("error_code")}
        missing = [t for t in topics if t.name not in counts]
        for t in topics:
            if t.name in counts and counts[t.name] != t.partitions:
                raise RuntimeError(f"topic {t.name} has {counts[t.name]} partitions, expected {t.partitions}")
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t.name, t.partitions, 1, topic_configs=t.config) for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another service created it between describe and create
            log.info("created topics", extra={"topics": [t.name for t in missing]})
    finally:
        await admin.close()
