"""The live path: each referral or capacity event, inside the idempotent consumer's transaction
(the inbox records its id), is folded into the facts of every live generation — the current
one and, during a replay, the one being built — and counted in Prometheus.

Feeding the building generation too is what makes the switch-over lossless: an event either
was in the log when the replay read its end offsets (the replay folds it) or arrives later
(the live consumer folds it into both). Folding twice is harmless: facts are keyed merges.
"""

from __future__ import annotations

from datetime import UTC

import asyncpg
from prometheus_client import Counter, Histogram
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import Envelope
from reflexe_common.geography import end_of_local_day
from reflexe_common.vocabulary import Reason, Urgency
from reflexe_indicators.adapters.store import apply, generation_schema, live_generations
from reflexe_indicators.domain.facts import fold as fold_event

REFERRALS = Counter("reflexe_referrals_total", "Referrals received.", ["department", "source_kind"])
OFFERS = Counter("reflexe_offers_total", "Offer events, by outcome (made, accepted, declined, expired, withdrawn).",
                 ["department", "outcome"])
OFFER_DECLINES = Counter("reflexe_offer_declines_total", "Offers declined by the HAD, by national reason code.",
                         ["department", "reason"])
ADMISSIONS = Counter("reflexe_admissions_total", "Patients admitted in HAD.", ["department"])
EVALUATIONS = Counter(
    "reflexe_evaluations_total",
    "Acceptances subject to the liaison nurse's evaluation: begun (pending), confirmed, withdrawn.",
    ["department", "outcome"])
AVIS_AFTER_POSTING = Counter("reflexe_avis_after_posting_total",
                             "Avis HAD given by a liaison nurse after the referral was posted.",
                             ["department", "avis"])
REFERRAL_OUTCOMES = Counter(
    "reflexe_referral_outcomes_total",
    "Referral lifecycle outcomes other than admission (ineligible, escalated, cancelled, discharged).",
    ["department", "outcome"])
DESK_ALERTS = Counter("reflexe_desk_alerts_total", "Alerts raised to the desks (offer_unanswered, admission_overdue).",
                      ["department", "alert"])
# Request time to admission (event times) of urgent referrals: a planned one is measured against
# its planned day instead (PLANNED_ADMISSIONS). Buckets from 15 min to 7 days, plus short ones for
# accelerated simulations and tests.
REQUEST_TO_ADMISSION = Histogram(
    "reflexe_request_to_admission_seconds",
    "Time from an urgent referral's request to its patient's admission in HAD (planned referrals: "
    "reflexe_planned_admissions_total).",
    ["department"],
    buckets=(10, 30, 60, 300, 900, 1800, 3600, 2 * 3600, 4 * 3600, 6 * 3600, 12 * 3600, 24 * 3600,
             48 * 3600, 72 * 3600, 7 * 86400),
)


PLANNED_ADMISSIONS = Counter(
    "reflexe_planned_admissions_total",
    "Admissions of planned referrals, on time (before the end of the planned day, local time) or late.",
    ["department", "timing"])


def handler(base_schema: str):
    async def fold(conn: asyncpg.Connection, envelope: Envelope) -> None:
        deltas = fold_event(envelope.message)
        generations = await live_generations(conn) if deltas else []
        for generation in generations:
            await apply(conn, generation_schema(base_schema, generation), deltas)
        _count(envelope.message)
        if isinstance(envelope.message, pb.PatientAdmitted) and generations:
            await _observe_admission(conn, generation_schema(base_schema, generations[0]), envelope.message)

    return fold


async def _observe_admission(conn: asyncpg.Connection, schema: str, m: pb.PatientAdmitted) -> None:
    """An urgent referral's request → admission delay, or whether a planned one came on time, read
    from the facts just folded (the same rules as service_layer.indicators)."""
    fact = await conn.fetchrow(f'SELECT requested_at, urgency, planned_date FROM "{schema}".referral_facts '
                               "WHERE referral_id = $1", m.header.referral_id)
    admitted_at = m.header.occurred_at.ToDatetime(tzinfo=UTC) if m.header.HasField("occurred_at") else None
    if fact is None or admitted_at is None:
        return
    department = m.header.department
    if fact["urgency"] == Urgency.PLANNED and fact["planned_date"] is not None:
        on_time = admitted_at < end_of_local_day(fact["planned_date"], department)
        PLANNED_ADMISSIONS.labels(department, "on_time" if on_time else "late").inc()
    elif fact["requested_at"] is not None:
        REQUEST_TO_ADMISSION.labels(department).observe(max(0.0, (admitted_at - fact["requested_at"]).total_seconds()))


REASONS = frozenset(r.value for r in Reason)
_departments: set[str] = set()


def _init_department(department: str) -> None:
    """Every outcome, reason and alert of a department at 0 from its first event: a refusal
    panel shows every reason and a rate is 0, not "no data", before the first occurrence."""
    _departments.add(department)
    for outcome in ("made", "accepted", "declined", "expired", "withdrawn"):
        OFFERS.labels(department, outcome)
    for reason in REASONS:
        OFFER_DECLINES.labels(department, reason)
    for outcome in ("ineligible", "escalated", "cancelled", "discharged"):
        REFERRAL_OUTCOMES.labels(department, outcome)
    for alert in ("offer_unanswered", "admission_overdue"):
        DESK_ALERTS.labels(department, alert)
    ADMISSIONS.labels(department)
    for outcome in ("pending", "confirmed", "withdrawn"):
        EVALUATIONS.labels(department, outcome)
    for avis in ("favourable", "unfavourable"):
        AVIS_AFTER_POSTING.labels(department, avis)
    for timing in ("on_time", "late"):
        PLANNED_ADMISSIONS.labels(department, timing)


def _count(m) -> None:
    department = m.header.department if hasattr(m, "header") else ""
    if department and department not in _departments:
        _init_department(department)
    match m:
        case pb.ReferralRequested():
            REFERRALS.labels(department, m.request.source.kind).inc()
        case pb.OfferMade():
            OFFERS.labels(department, "made").inc()
        case pb.OfferAccepted():
            OFFERS.labels(department, "accepted").inc()
            if m.pending_evaluation:
                EVALUATIONS.labels(department, "pending").inc()
        case pb.EvaluationConfirmed():
            EVALUATIONS.labels(department, "confirmed").inc()
        case pb.AcceptanceWithdrawn():
            EVALUATIONS.labels(department, "withdrawn").inc()
        case pb.AvisGiven():
            AVIS_AFTER_POSTING.labels(department, "favourable" if m.eligible else "unfavourable").inc()
        case pb.OfferDeclined():
            OFFERS.labels(department, "declined").inc()
            # Codes outside the national list count as OTHER (as in the indicators), which
            # also bounds the label's values.
            OFFER_DECLINES.labels(department, m.reason if m.reason in REASONS else "OTHER").inc()
        case pb.OfferExpired():
            OFFERS.labels(department, "expired").inc()
        case pb.OfferWithdrawn():
            OFFERS.labels(department, "withdrawn").inc()
        case pb.PatientAdmitted():
            ADMISSIONS.labels(department).inc()
        case pb.ReferralDeclaredIneligible():
            REFERRAL_OUTCOMES.labels(department, "ineligible").inc()
        case pb.ReferralEscalated():
            REFERRAL_OUTCOMES.labels(department, "escalated").inc()
        case pb.ReferralCancelled():
            REFERRAL_OUTCOMES.labels(department, "cancelled").inc()
        case pb.PatientDischarged():
            REFERRAL_OUTCOMES.labels(department, "discharged").inc()
        case pb.OfferUnanswered():
            DESK_ALERTS.labels(department, "offer_unanswered").inc()
        case pb.AdmissionOverdue():
            DESK_ALERTS.labels(department, "admission_overdue").inc()
