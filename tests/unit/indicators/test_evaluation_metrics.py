"""The live metrics of the evaluation before admission: acceptances pending evaluation, their
confirmations and withdrawals, and the avis HAD given after posting, per department."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prometheus_client import REGISTRY
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts
from reflexe_indicators.service_layer.facts import _count

AT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
HAD = "340780477"


def header() -> pb.ReferralEventHeader:
    return pb.ReferralEventHeader(referral_id=str(uuid.uuid4()), department="2A", occurred_at=ts(AT))


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_evaluations_and_avis_after_posting_are_counted() -> None:
    def evaluations(outcome: str) -> float:
        return sample("reflexe_evaluations_total", department="2A", outcome=outcome)

    before = {o: evaluations(o) for o in ("pending", "confirmed", "withdrawn")}
    unfavourable = sample("reflexe_avis_after_posting_total", department="2A", avis="unfavourable")
    _count(pb.OfferAccepted(header=header(), offer_id="o1", had_finess=HAD, pending_evaluation=True))
    _count(pb.OfferAccepted(header=header(), offer_id="o2", had_finess=HAD))  # a plain acceptance: no evaluation
    _count(pb.EvaluationConfirmed(header=header(), offer_id="o1", had_finess=HAD))
    _count(pb.AcceptanceWithdrawn(header=header(), offer_id="o3", had_finess=HAD, reason="OTHER"))
    _count(pb.AvisGiven(header=header(), eligible=False, reason="MEDICAL_NOT_ELIGIBLE"))
    assert {o: evaluations(o) - before[o] for o in before} == {"pending": 1, "confirmed": 1, "withdrawn": 1}
    assert sample("reflexe_avis_after_posting_total", department="2A", avis="unfavourable") == unfavourable + 1
