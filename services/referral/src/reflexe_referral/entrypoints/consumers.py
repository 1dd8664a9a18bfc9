"""Kafka entrypoints: the matcher's decisions and referrals published straight onto Kafka.
Each handler runs inside the idempotent consumer's transaction (see reflexe_common.inbox)."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
from reflexe.v1 import matching_pb2, submission_pb2

from reflexe_common.envelope import Envelope, PoisonRecord, dt
from reflexe_common.geography import Geography
from reflexe_referral.adapters.codec import request_from_proto
from reflexe_referral.adapters.store import ReferralStore
from reflexe_referral.domain.model import Referral
from reflexe_referral.service_layer.handlers import request_fingerprint

MATCHER = "system:matcher"


def matching_handler(unanswered_after: timedelta):
    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, (matching_pb2.OfferProposed, matching_pb2.MatchExhausted)):
            return  # other matching events are not ours to act on
        store = ReferralStore(conn, unanswered_after)
        referral = await store.load(message.referral_id)
        if referral is None:
            raise PoisonRecord(f"matcher decision for unknown referral {message.referral_id}")
        at = dt(message.occurred_at)
        if isinstance(message, matching_pb2.OfferProposed):
            events = referral.record_offer(message.offer_id, message.had_finess, dt(message.hold_until),
                                           message.explanation, message.by_desk, at, explanation_json=message.explanation_json)
        else:
            events = referral.escalate(message.explanation or "aucune HAD ne peut prendre ce patient", at)
        await store.append(referral, events)

    return handle


def submission_handler(unanswered_after: timedelta):
    """A referral published on Kafka by a hospital system: the same rules as the REST API."""

    async def handle(conn: asyncpg.Connection, envelope: Envelope) -> None:
        message = envelope.message
        if not isinstance(message, submission_pb2.SubmitReferral):
            raise PoisonRecord(f"unexpected {envelope.type} on the submissions topic")
        if message.submitted_by != message.request.source.finess:
            raise PoisonRecord("submitted_by does not match request.source.finess")
        commune = Geography.load().commune(message.request.patient.care_commune)
        if commune is None:
            raise PoisonRecord(f"unknown INSEE code {message.request.patient.care_commune!r} in patient.care_commune")
        message.request.department = commune.department_code
        stamped_by_client = message.request.HasField("requested_at")
        if not stamped_by_client:
            message.request.requested_at.FromDatetime(envelope.time)
        try:
            request = request_from_proto(message.request)
        except ValueError as exc:
            raise PoisonRecord(f"invalid code in the referral: {exc}") from exc
        problems = request.validate()
        if problems:
            raise PoisonRecord("the referral breaks domain rules: " + "; ".join(f"{p}: {m}" for p, m in problems))
        store = ReferralStore(conn, unanswered_after)
        fingerprint = request_fingerprint(request, stamped_by_client)
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", request.referral_id)
        existing = await store.request_hash(request.referral_id)
        if existing is not None:
            if existing != fingerprint:
                raise PoisonRecord(f"referral {request.referral_id} exists with a different body")
            return
        first, *rest = Referral.request(request, envelope.time)
        await store.create(first, fingerprint, rest)

    return handle
