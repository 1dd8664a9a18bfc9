"""Kafka entrypoints: the matcher's decisions and referrals published straight onto Kafka.
Each handler runs its command inside the idempotent consumer's transaction (see
reflexe_common.inbox), the same command as the HTTP doors; what the command refuses is a poison
record, dead-lettered with the reason."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import asyncpg
from reflexe.v1 import matching_pb2, submission_pb2

from reflexe_common.envelope import Envelope, PoisonRecord, dt
from reflexe_referral.adapters.codec import request_from_proto
from reflexe_referral.domain.errors import InvalidRequest
from reflexe_referral.domain.model import Referral
from reflexe_referral.service_layer.handlers import (ConflictingDuplicate, NotTheSource, SubmitReferral, UnknownCommune,
                                                     UnknownReferral, act_on_referral, submit_referral)
from reflexe_referral.service_layer.unit_of_work import ConsumerUnitOfWork, UnitOfWork

MATCHER = "system:matcher"

# The unit of work of a record: its command runs in the consumer's transaction.
UnitOfWorkOf = Callable[[asyncpg.Connection], UnitOfWork]


def _in_the_consumers_transaction(unanswered_after: timedelta) -> UnitOfWorkOf:
    return lambda conn: ConsumerUnitOfWork(conn, unanswered_after)


def matching_handler(unanswered_after: timedelta, unit_of_work: UnitOfWorkOf | None = None):
    unit_of_work = unit_of_work or _in_the_consumers_transaction(unanswered_after)

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, (matching_pb2.OfferProposed, matching_pb2.MatchExhausted)):
            return  # other matching events are not ours to act on
        if isinstance(message, matching_pb2.MatchExhausted) and message.by_desk:
            # Only the HAD a desk picked could not take the patient: the desk hears it from this event
            # (notify), and the search's state is the matcher's own search's to change. Escalating here
            # would escalate, late, a referral the desk has widened meanwhile, and tell its desk twice.
            return
        at = dt(message.occurred_at)

        def decide(referral: Referral):
            if isinstance(message, matching_pb2.OfferProposed):
                return referral.record_offer(message.offer_id, message.had_finess, dt(message.hold_until),
                                             message.explanation, message.by_desk, at,
                                             explanation_json=message.explanation_json)
            return referral.escalate(message.explanation or "aucune HAD ne peut prendre ce patient", at)

        try:
            await act_on_referral(unit_of_work(conn), message.referral_id, decide)
        except UnknownReferral as exc:
            raise PoisonRecord(f"matcher decision for unknown referral {message.referral_id}") from exc

    return handle


def submission_handler(unanswered_after: timedelta, unit_of_work: UnitOfWorkOf | None = None):
    """A referral published on Kafka by a hospital system: the REST API's submit command."""
    unit_of_work = unit_of_work or _in_the_consumers_transaction(unanswered_after)

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, submission_pb2.SubmitReferral):
            raise PoisonRecord(f"unexpected {envelope.type} on the submissions topic")
        stamped_by_client = message.request.HasField("requested_at")
        if not stamped_by_client:
            message.request.requested_at.FromDatetime(envelope.time)
        try:
            request = request_from_proto(message.request)
        except ValueError as exc:
            raise PoisonRecord(f"invalid code in the referral: {exc}") from exc
        command = SubmitReferral(request, stamped_by_client, submitted_by=message.submitted_by)
        try:
            await submit_referral(unit_of_work(conn), command, envelope.time)
        except NotTheSource as exc:
            raise PoisonRecord("submitted_by does not match request.source.finess") from exc
        except UnknownCommune as exc:
            raise PoisonRecord(str(exc)) from exc
        except InvalidRequest as exc:
            raise PoisonRecord("the referral breaks domain rules: " +
                               "; ".join(f"{p}: {m}" for p, m in exc.problems)) from exc
        except ConflictingDuplicate as exc:
            raise PoisonRecord(f"referral {exc} exists with a different body") from exc

    return handle
