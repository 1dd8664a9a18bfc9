"""Notify and the evaluation before admission: a withdrawn acceptance reaches the desk, the HAD that
withdrew and the referring hospital; a confirmation and a liaison nurse's avis reach the desk's stream."""

from __future__ import annotations

from datetime import UTC, datetime

from reflexe.v1 import referral_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_notify.adapters.events import desk_event_from, notice_from
from reflexe_notify.domain.desk import describe
from reflexe_notify.domain.routing import EventKind as K
from reflexe_notify.domain.routing import recipients_for

AT = datetime(2026, 11, 26, 10, 15, tzinfo=UTC)
RID = "0b8f5c3e-8d5e-4a53-9d1e-6f0a4c2b9e11"
HAD = "340011295"


def header(actor: str) -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id=RID, department="34", occurred_at=ts(AT), actor=actor)


def test_a_withdrawn_acceptance_reaches_the_desk_the_had_and_the_hospital() -> None:
    message = referral_pb2.AcceptanceWithdrawn(header=header(f"had:{HAD}"), offer_id="o1", had_finess=HAD,
                                               reason="MEDICAL_NOT_ELIGIBLE", text="instable")
    notice = notice_from(wrap(message, "tests"))
    assert notice is not None and notice.kind == K.ACCEPTANCE_WITHDRAWN
    assert notice.data["reason"] == "MEDICAL_NOT_ELIGIBLE" and "text" not in notice.data
    told = {str(r) for r in recipients_for(notice.kind, notice.department, notice.had_finess, source_finess="340780477")}
    assert told == {"desk:34", f"had:{HAD}", "hospital:340780477"}
    entry = desk_event_from(wrap(message, "tests"))
    assert entry is not None and entry.kind == "offer.acceptance_withdrawn"
    title, sentence = describe(entry.kind, entry.data)
    assert title == "Acceptation retirée" and "autre HAD" in sentence


def test_an_acceptance_pending_evaluation_and_its_confirmation_are_told_as_such() -> None:
    accepted = referral_pb2.OfferAccepted(header=header(f"had:{HAD}"), offer_id="o1", had_finess=HAD,
                                          pending_evaluation=True)
    notice = notice_from(wrap(accepted, "tests"))
    assert notice is not None and notice.data["pending_evaluation"] is True
    assert describe(str(notice.kind), notice.data)[0] == "Offre acceptée sous réserve"
    confirmed = referral_pb2.EvaluationConfirmed(header=header(f"had:{HAD}"), offer_id="o1", had_finess=HAD)
    notice = notice_from(wrap(confirmed, "tests"))
    assert notice is not None and notice.kind == K.EVALUATION_CONFIRMED
    assert "desk:34" in {str(r) for r in recipients_for(notice.kind, notice.department, notice.had_finess)}


def test_a_liaison_nurses_avis_enters_the_desks_stream() -> None:
    message = referral_pb2.AvisGiven(header=header(f"liaison:{HAD}"), eligible=False, reason="SOCIAL_NOT_ELIGIBLE",
                                     text="vit seul")
    entry = desk_event_from(wrap(message, "tests"))
    assert entry is not None and entry.kind == "referral.avis" and entry.data["eligible"] is False
    assert "text" not in entry.data  # free text stays in the referral's timeline
    assert describe(entry.kind, entry.data)[0] == "Avis HAD défavorable"
