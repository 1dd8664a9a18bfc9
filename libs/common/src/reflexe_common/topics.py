"""Every Kafka topic of the platform, declared once. Locally the services create them (auto-creation
is off); in production the Kafka operator does, from KafkaTopic resources generated from here.

Department-keyed flows share one partition count so that a department's referral, matching
and capacity events land on partitions with the same number, and a matcher instance that owns
a department owns all of its flows.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reflexe_common.envelope import Envelope, PoisonRecord
from reflexe_common.finess import FINESS_SHAPE, is_finess
from reflexe_common.kafka import KafkaAccess
from reflexe_common.partition_table import PARTITIONS

log = logging.getLogger(__name__)

# 24 partitions, each department on the one its population earns (reflexe_common.partitioning).
DEPARTMENT_PARTITIONS = PARTITIONS
FOREVER = "-1"


class TopicSettings(BaseSettings):
    """How many copies of each topic the platform creates. On a cluster of three brokers, three
    replicas and two in sync: a write acknowledged by all in-sync replicas (acks=all, as the
    outbox relay's transactions imply) survives the loss of any one broker, and producing goes on
    while one broker is down. The defaults suit the one-node development broker."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    replication_factor: int = Field(1, ge=1, validation_alias="KAFKA_TOPIC_REPLICATION_FACTOR")
    min_insync_replicas: int = Field(1, ge=1, validation_alias="KAFKA_TOPIC_MIN_INSYNC_REPLICAS")

    @model_validator(mode="after")
    def _min_insync_within_replicas(self) -> TopicSettings:
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(f"KAFKA_TOPIC_MIN_INSYNC_REPLICAS ({self.min_insync_replicas}) exceeds "
                             f"KAFKA_TOPIC_REPLICATION_FACTOR ({self.replication_factor}): no write could succeed")
        return self


@dataclass(frozen=True)
class Topic:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


# The event log is kept forever: indicators are rebuilt by replaying it from the beginning.
REFERRAL_EVENTS = Topic("reflexe.referral.events.v1", DEPARTMENT_PARTITIONS, {"retention.ms": FOREVER})
MATCHING_EVENTS = Topic("reflexe.matching.events.v1", DEPARTMENT_PARTITIONS, {"retention.ms": FOREVER})
CAPACITY_EVENTS = Topic("reflexe.capacity.events.v1", DEPARTMENT_PARTITIONS, {"retention.ms": FOREVER})
# Poison records, with the reason in headers; kept long enough for an operator to act.
DEAD_LETTERS = Topic("reflexe.deadletter.v1", 1, {"retention.ms": str(30 * 86400_000)})

ALL_TOPICS: tuple[Topic, ...] = (
    REFERRAL_EVENTS,
    MATCHING_EVENTS,
    CAPACITY_EVENTS,
    DEAD_LETTERS,
)


@dataclass(frozen=True)
class InboundKind:
    """Commands that hospital and HAD information systems publish straight onto Kafka. Each
    sender has its own topic, `<prefix><FINESS>`, that only its principal may write to
    (kafka_acls.py): the sender's FINESS is read from the topic the broker let it write to,
    never from a field of the record, which the sender writes and could forge."""

    name: str
    sender_role: str  # hospital | had
    claim_field: str  # the field of the command that names the establishment it acts for
    retention_ms: str = str(14 * 86400_000)

    @property
    def prefix(self) -> str:
        # The kind comes before the FINESS so that one PREFIXED ACL gives a service exactly
        # its kind of inbound topic.
        return f"reflexe.inbound.{self.name}.v1."

    @property
    def pattern(self) -> str:
        return "^" + re.escape(self.prefix) + FINESS_PATTERN + "$"

    def topic(self, finess: str) -> Topic:
        if not is_finess(finess):
            raise ValueError(f"{finess!r} is not a FINESS number")
        # One partition: one sender's commands, in the order it sent them.
        return Topic(self.prefix + finess, 1, {"retention.ms": self.retention_ms})

    def verify_sender(self, record: Any, envelope: Envelope) -> None:
        """A RecordProcessor verifier: the establishment the command claims to act for must be
        the sender whose topic it came on; otherwise it is dead-lettered as SENDER_MISMATCH."""
        sender = self.sender(record.topic)
        if sender is None:
            raise PoisonRecord(f"{SENDER_MISMATCH}: {record.topic} is not an inbound {self.name} topic")
        claimed = getattr(envelope.message, self.claim_field, None)
        if claimed is None:
            return  # not this kind's command: the handler rejects it with its own reason
        if claimed != sender:
            raise PoisonRecord(f"{SENDER_MISMATCH}: {self.claim_field} {claimed!r} but the record was "
                               f"published by {sender} (on {record.topic})")

    def sender(self, topic: str) -> str | None:
        """The FINESS whose topic this is, or None if it is not a topic of this kind."""
        if topic.startswith(self.prefix) and re.fullmatch(FINESS_PATTERN, topic[len(self.prefix):]):
            return topic[len(self.prefix):]
        return None


SENDER_MISMATCH = "SENDER_MISMATCH"
FINESS_PATTERN = FINESS_SHAPE.pattern  # 2A/2B (Corsica) put letters in FINESS numbers
# Referrals (reflexe.v1.SubmitReferral) from hospital systems; capacity declarations
# (reflexe.v1.DeclareCapacity) from HAD systems.
INBOUND_REFERRALS = InboundKind("referrals", "hospital", "submitted_by")
INBOUND_CAPACITY = InboundKind("capacity", "had", "had_finess")
INBOUND_KINDS = {kind.sender_role: kind for kind in (INBOUND_REFERRALS, INBOUND_CAPACITY)}


def topic_label(topic: str) -> str:
    """A topic as a metric label: every sender's inbound topic of a kind counts as one
    (`reflexe.inbound.referrals.v1.*`), so the series do not grow with the establishments."""
    for kind in INBOUND_KINDS.values():
        if topic.startswith(kind.prefix):
            return kind.prefix + "*"
    return topic


class MissingTopics(RuntimeError):
    """Topics the service needs are absent and it may not create them (REFLEXE_KAFKA_CREATE_TOPICS=false)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(
            f"missing Kafka topics {', '.join(names)}: with REFLEXE_KAFKA_CREATE_TOPICS=false the service "
            "never creates them; declare them first (deploy/k8s KafkaTopic resources, "
            "scripts/gen_k8s_manifests.py)")


def topics_to_create(topics: tuple[Topic, ...], partition_counts: dict[str, int], create: bool) -> list[Topic]:
    """The topics to create, given the partition count of each existing one. A topic with another
    partition count than declared stops the service (keys would land on other partitions); a
    missing topic too when the service may not create it."""
    for t in topics:
        if t.name in partition_counts and partition_counts[t.name] != t.partitions:
            raise RuntimeError(f"topic {t.name} has {partition_counts[t.name]} partitions, expected {t.partitions}: "
                               "changing the count is a migration (docs/scaling.md); a local broker is reset "
                               "by deploy/local/infra.sh clean")
    missing = [t for t in topics if t.name not in partition_counts]
    if missing and not create:
        raise MissingTopics([t.name for t in missing])
    return missing


DESCRIBE_ATTEMPTS = 10


async def describe_topics(admin: AIOKafkaAdminClient, names: list[str]) -> list[dict[str, Any]]:
    """The admin client asks a node picked at random from its metadata, which may be a node that
    just died (a service restarted while a broker is down failed its start): a retriable error is
    asked again, of another node."""
    attempt = 1
    while True:
        try:
            return await admin.describe_topics(names)
        except KafkaError as exc:
            if not exc.retriable or attempt == DESCRIBE_ATTEMPTS:
                raise
            log.warning("describing topics failed; asking again", extra={"error": repr(exc), "attempt": attempt})
        attempt += 1
        await asyncio.sleep(0.5)


async def ensure_topics(kafka: KafkaAccess, topics: tuple[Topic, ...] = ALL_TOPICS,
                        settings: TopicSettings | None = None, create: bool = True) -> None:
    """Create the missing topics, with the replicas of `settings` (by default read from the
    environment), or, with create=False, refuse to run without them; refuse to run on a topic
    whose partition count differs."""
    settings = settings or TopicSettings()
    admin = AIOKafkaAdminClient(**kafka.options())
    await admin.start()
    try:
        existing = await describe_topics(admin, [t.name for t in topics])
        counts = {d["topic"]: len(d["partitions"]) for d in existing if not d.get("error_code")}
        missing = topics_to_create(topics, counts, create)
        # Fewer copies than the cluster should keep is worth saying, not refusing: a topic made
        # on one node stays usable while an operator reassigns its replicas.
        for d in existing:
            replicas = min((len(p["replicas"]) for p in d.get("partitions") or ()), default=None)
            if not d.get("error_code") and replicas is not None and replicas < settings.replication_factor:
                log.warning("topic has fewer replicas than configured",
                            extra={"topic": d["topic"], "replicas": replicas,
                                   "expected": settings.replication_factor})
        if missing:
            try:
                await admin.create_topics(
                    [NewTopic(t.name, t.partitions, settings.replication_factor,
                              topic_configs={"min.insync.replicas": str(settings.min_insync_replicas)} | t.config)
                     for t in missing]
                )
            except TopicAlreadyExistsError:
                pass  # another service created it between describe and create
            log.info("created topics", extra={"topics": [t.name for t in missing]})
            await _until_served(admin, missing)
    finally:
        await admin.close()


async def _until_served(admin: AIOKafkaAdminClient, topics: list[Topic], timeout: float = 30.0) -> None:
    """The controller answers a creation before the brokers' metadata has the topics' leaders: a
    consumer or producer started at once would meet UNKNOWN_TOPIC_OR_PARTITION. Wait until every
    partition has a leader."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await describe_topics(admin, [t.name for t in topics])
        led = {d["topic"]: sum(1 for p in d.get("partitions") or () if p.get("leader", -1) >= 0)
               for d in described if not d.get("error_code")}
        if all(led.get(t.name) == t.partitions for t in topics):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"topics created but not served after {timeout:.0f} s: {sorted(t.name for t in topics)}")
        await asyncio.sleep(0.1)
