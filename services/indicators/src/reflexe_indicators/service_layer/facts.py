"""The live path: each referral or capacity event, inside the idempotent consumer's transaction
(the inbox records its id), is folded into the facts of every live generation — the current
one and, during a replay, the one being built — and counted in Prometheus.

Feeding the building generation too is what makes the switch-over lossless: an event either
was in the log when the replay read its end offsets (the replay folds it) or arrives later
(the live consumer folds it into both). Folding twice is harmless: facts are keyed merges.
"""

from __future__ import annotations

import asyncpg
from prometheus_client import Counter
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import Envelope
from reflexe_indicators.adapters.store import apply, generation_schema, live_generations
from reflexe_indicators.domain.facts import fold as fold_event

REFERRALS = Counter("reflexe_referrals_total", "Referrals received.", ["department", "source_kind"])
OFFERS = Counter("reflexe_offers_total", "Offer events, by outcome (made, accepted, declined, expired).",
                 ["department", "outcome"])
ADMISSIONS = Counter("reflexe_admissions_total", "Patients admitted in HAD.", ["department"])


def handler(base_schema: str):
    async def fold(conn: asyncpg.Connection, envelope: Envelope) -> None:
        deltas = fold_event(envelope.message)
        if not deltas:
            return
        for generation in await live_generations(conn):
            await apply(conn, generation_schema(base_schema, generation), deltas)
        _count(envelope.message)

    return fold


def _count(m) -> None:
    department = m.header.department if hasattr(m, "header") else ""
    match m:
        case pb.ReferralRequested():
            REFERRALS.labels(department, m.request.source.kind).inc()
        case pb.OfferMade():
            OFFERS.labels(department, "made").inc()
        case pb.OfferAccepted():
            OFFERS.labels(department, "accepted").inc()
        case pb.OfferDeclined():
            OFFERS.labels(department, "declined").inc()
        case pb.OfferExpired():
            OFFERS.labels(department, "expired").inc()
        case pb.PatientAdmitted():
            ADMISSIONS.labels(department).inc()
