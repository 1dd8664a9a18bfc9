"""Kafka entrypoints of the capacity service: the matcher (a faust agent following the referral
event log) and capacity declarations published straight onto Kafka by HAD systems."""

from __future__ import annotations

from datetime import UTC

import asyncpg
import faust
from reflexe.v1 import capacity_pb2

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.domain.capacity import CapacityDeclaration
from reflexe_capacity.service_layer.matcher import Matcher
from reflexe_common.envelope import Envelope, PoisonRecord, dt
from reflexe_common.inbox import Record, RecordProcessor
from reflexe_common.topics import REFERRAL_EVENTS
from reflexe_common.vocabulary import CapacityStatus

MATCHER_GROUP = "reflexe-matcher"


def declaration_handler(matcher: Matcher):
    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        m = envelope.message
        if not isinstance(m, capacity_pb2.DeclareCapacity):
            raise PoisonRecord(f"unexpected {envelope.type} on the declarations topic")
        try:
            declaration = CapacityDeclaration(m.had_finess, m.places_available, m.admissions_possible_today,
                                              CapacityStatus(m.status), dt(m.declared_at) or envelope.time.astimezone(UTC))
        except ValueError as exc:
            raise PoisonRecord(f"invalid declaration: {exc}") from exc
        try:
            await matcher.declare(CapacityStore(conn), declaration, "kafka")
        except LookupError as exc:
            raise PoisonRecord(f"unknown HAD {m.had_finess}") from exc

    return handle


def matcher_app(bootstrap: str, processor: RecordProcessor, instance: str) -> faust.App:
    """A faust app whose one agent feeds the referral log to the matcher, at least once: the
    processor's inbox makes redeliveries harmless, and its state lives in PostgreSQL."""
    app = faust.App(
        MATCHER_GROUP,
        broker=f"kafka://{bootstrap}",
        processing_guarantee="at_least_once",
        web_enabled=False,
        store="memory://",  # no faust tables: durable state is in PostgreSQL
        topic_allow_declare=False,  # topics are created by reflexe_common.topics
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_client_id=f"{MATCHER_GROUP}-{instance}",
    )
    referral_events = app.topic(REFERRAL_EVENTS.name, value_serializer="raw", key_serializer="raw",
                                partitions=REFERRAL_EVENTS.partitions)

    @app.agent(referral_events, name="matcher")
    async def match_referrals(stream):
        async for event in stream.events():
            msg = event.message
            await processor.process(Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                           [(k, v) for k, v in (msg.headers or ())]))

    return app
