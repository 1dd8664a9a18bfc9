"""Kafka entrypoints of the capacity service: the referral log into the matcher, and capacity
declarations published straight onto Kafka by HAD systems. Each translates a record into the
service layer's command, run in a unit of work (the stream is wired in app.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
from reflexe.v1 import capacity_pb2

from reflexe_capacity.adapters.owned_ledgers import BatchContext
from reflexe_capacity.domain.capacity import CapacityDeclaration
from reflexe_capacity.service_layer.matcher import Matcher
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_common.checks import CLOCK_SKEW, in_the_future
from reflexe_common.envelope import Envelope, PoisonRecord, dt
from reflexe_common.finess import FINESS_PROBLEM, is_finess
from reflexe_common.vocabulary import CapacityStatus


def referral_events_handler(matcher: Matcher):
    """The referral log into the matcher: in the batch's unit of work when the stream runs as the
    partitions' single writer (OwnedLedgers), else in one on the transaction's connection."""

    async def handle(context: BatchContext | asyncpg.Connection, envelope: Envelope) -> None:
        if isinstance(context, BatchContext):
            await matcher.handle(context.uow, envelope)
        else:
            await matcher.handle(PostgresUnitOfWork(context), envelope)

    return handle


def declaration_handler(matcher: Matcher):
    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        m = envelope.message
        if not isinstance(m, capacity_pb2.DeclareCapacity):
            raise PoisonRecord(f"unexpected {envelope.type} on the declarations topic")
        if not is_finess(m.had_finess):
            raise PoisonRecord(f"invalid declaration: had_finess {m.had_finess!r} is {FINESS_PROBLEM}")
        try:
            declaration = CapacityDeclaration(m.had_finess, m.places_available, m.admissions_possible_today,
                                              CapacityStatus(m.status), dt(m.declared_at) or envelope.time.astimezone(UTC),
                                              m.active_patients if m.HasField("active_patients") else None)
        except ValueError as exc:
            raise PoisonRecord(f"invalid declaration: {exc}") from exc
        if in_the_future(declaration.declared_at, datetime.now(UTC)):
            # It would never go stale and would hide every later declaration.
            raise PoisonRecord(f"declared_at {declaration.declared_at.isoformat()} is more than {CLOCK_SKEW} in the future")
        try:
            await matcher.declare(PostgresUnitOfWork(conn), declaration, "kafka")
        except LookupError as exc:
            raise PoisonRecord(f"unknown HAD {m.had_finess}") from exc

    return handle
