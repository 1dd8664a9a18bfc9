"""Folds referral events into facts (idempotent upserts keyed by referral and offer) and counts
them in Prometheus. Runs inside the idempotent consumer's transaction."""

from __future__ import annotations

import uuid

import asyncpg
from prometheus_client import Counter
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import Envelope, dt

REFERRALS = Counter("reflexe_referrals_total", "Referrals received.", ["department", "source_kind"])
OFFERS = Counter("reflexe_offers_total", "Offer events, by outcome (made, accepted, declined, expired).",
                 ["department", "outcome"])
ADMISSIONS = Counter("reflexe_admissions_total", "Patients admitted in HAD.", ["department"])


async def _set(conn: asyncpg.Connection, referral_id: str, **columns) -> None:
    names = list(columns)
    assignments = ", ".join(f"{n} = COALESCE(referral_facts.{n}, EXCLUDED.{n})" for n in names)
    placeholders = ", ".join(f"${i + 2}" for i in range(len(names)))
    await conn.execute(
        f"INSERT INTO referral_facts (referral_id, {', '.join(names)}) VALUES ($1, {placeholders}) "
        f"ON CONFLICT (referral_id) DO UPDATE SET {assignments}",
        uuid.UUID(referral_id), *columns.values(),
    )


async def _offer_outcome(conn: asyncpg.Connection, offer_id: str, outcome: str, at, reason: str | None = None) -> None:
    await conn.execute("UPDATE offer_facts SET outcome = $2, outcome_at = $3, reason = $4 WHERE offer_id = $1 AND outcome IS NULL",
                       offer_id, outcome, at, reason)


async def fold(conn: asyncpg.Connection, envelope: Envelope) -> None:
    m = envelope.message
    header = getattr(m, "header", None)
    if header is None:
        return  # not a referral event (matching and capacity events are folded elsewhere)
    rid, department, at = header.referral_id, header.department, dt(header.occurred_at)
    match m:
        case pb.ReferralRequested():
            r = m.request
            await _set(conn, rid, department=department, source_kind=r.source.kind, source_finess=r.source.finess,
                       place_of_care=r.patient.place_of_care, requested_at=dt(r.requested_at))
            REFERRALS.labels(department, r.source.kind).inc()
        case pb.ReferralDeclaredIneligible():
            await _set(conn, rid, ineligible_at=at, ineligible_reason=m.reason)
        case pb.OfferMade():
            await conn.execute(
                "INSERT INTO offer_facts (offer_id, referral_id, department, had_finess, made_at, by_desk) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                m.offer_id, uuid.UUID(rid), department, m.had_finess, at, m.by_desk)
            await _set(conn, rid, first_offer_at=at)
            OFFERS.labels(department, "made").inc()
        case pb.OfferAccepted():
            await _offer_outcome(conn, m.offer_id, "ACCEPTED", at)
            await _set(conn, rid, accepted_at=at, accepted_had=m.had_finess)
            OFFERS.labels(department, "accepted").inc()
        case pb.OfferDeclined():
            await _offer_outcome(conn, m.offer_id, "DECLINED", at, m.reason)
            OFFERS.labels(department, "declined").inc()
        case pb.OfferExpired():
            await _offer_outcome(conn, m.offer_id, "EXPIRED", at)
            OFFERS.labels(department, "expired").inc()
        case pb.OfferWithdrawn():
            await _offer_outcome(conn, m.offer_id, "WITHDRAWN", at)
        case pb.ReferralEscalated():
            await _set(conn, rid, escalated_at=at)
        case pb.PatientAdmitted():
            await _set(conn, rid, admitted_at=at, admitted_had=m.had_finess)
            ADMISSIONS.labels(department).inc()
        case pb.PatientDischarged():
            await _set(conn, rid, discharged_at=at)
        case pb.ReferralCancelled():
            await _set(conn, rid, cancelled_at=at, cancel_reason=m.reason)
