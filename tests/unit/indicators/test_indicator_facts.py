"""Facts do not depend on the order events arrive in: the in-memory merge (replay) folds every
permutation of a referral's events to the same row, and the SQL upsert states the same rules."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import UTC, datetime, timedelta

from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts
from reflexe_indicators.adapters.store import upsert_sql
from reflexe_indicators.domain.facts import OFFERS, REFERRALS, Batch, fold
from reflexe_indicators.service_layer.indicators import next_period, paris_midnight, period_start

T0 = datetime(2025, 3, 30, 0, 30, tzinfo=UTC)
RID = str(uuid.uuid4())


def header(minutes: int) -> pb.ReferralEventHeader:
    return pb.ReferralEventHeader(referral_id=RID, department="34", occurred_at=ts(T0 + timedelta(minutes=minutes)))


def events() -> list:
    return [
        pb.ReferralRequested(header=header(0), request=pb.ReferralRequest(
            referral_id=RID, source=pb.Source(kind="ED", finess="340000017"),
            patient=pb.Patient(place_of_care="EHPAD"), requested_at=ts(T0))),
        pb.OfferMade(header=header(5), offer_id="o1", had_finess="340000108"),
        pb.OfferDeclined(header=header(9), offer_id="o1", had_finess="340000108", reason="NO_CAPACITY"),
        pb.OfferMade(header=header(12), offer_id="o2", had_finess="340000207"),
        pb.OfferAccepted(header=header(20), offer_id="o2", had_finess="340000207"),
        pb.PatientAdmitted(header=header(600), had_finess="340000207"),
        pb.PatientDischarged(header=header(6000), had_finess="340000207"),
    ]


def folded(order) -> dict:
    batch = Batch()
    for m in order:
        batch.add(fold(m))
    return {name: {k: dict(v) for k, v in rows.items()} for name, rows in batch.rows.items()}


def test_every_arrival_order_gives_the_same_facts():
    reference = folded(events())
    ref = next(iter(reference["referral_facts"].values()))
    assert ref["first_offer_at"] == T0 + timedelta(minutes=5) and ref["first_offer_had"] == "340000108"
    assert ref["accepted_had"] == "340000207" and ref["admitted_at"] == T0 + timedelta(minutes=600)
    assert reference["offer_facts"][("o1",)]["outcome"] == "DECLINED"
    assert reference["offer_facts"][("o1",)]["made_at"] == T0 + timedelta(minutes=5)
    rng = random.Random(1)
    orders = list(itertools.permutations(events()))
    for order in rng.sample(orders, 300) + [tuple(reversed(events()))]:
        assert folded(order) == reference


def test_redelivery_changes_nothing():
    assert folded(events() + events()[::2]) == folded(events())


def test_the_sql_upsert_keeps_the_earliest_group_and_the_first_values():
    sql = upsert_sql("indicators_g1", REFERRALS)
    assert "ON CONFLICT (referral_id) DO UPDATE" in sql and "unnest(" in sql
    assert "accepted_had = CASE WHEN (EXCLUDED.accepted_at IS NOT NULL AND (f.accepted_at IS NULL OR EXCLUDED.accepted_at < f.accepted_at))" in sql
    assert "source_finess = COALESCE(f.source_finess, EXCLUDED.source_finess)" in sql
    assert "ON CONFLICT (offer_id)" in upsert_sql("indicators_g1", OFFERS)


def test_periods_are_paris_local():
    from datetime import date
    assert paris_midnight(date(2025, 3, 30)) == datetime(2025, 3, 29, 23, 0, tzinfo=UTC)
    assert paris_midnight(date(2025, 3, 31)) == datetime(2025, 3, 30, 22, 0, tzinfo=UTC)  # the DST day has 23 h
    assert next_period(date(2025, 12, 1), "month") == date(2026, 1, 1)
    assert period_start(date(2025, 3, 17), "month") == date(2025, 3, 1)


def test_the_request_brings_its_urgency_planned_date_and_avis():
    def requested(**clinical_and_avis) -> dict:
        avis = clinical_and_avis.pop("avis", None)
        message = pb.ReferralRequested(header=header(0), request=pb.ReferralRequest(
            referral_id=RID, clinical=pb.Clinical(**clinical_and_avis), avis=avis, requested_at=ts(T0)))
        [(_, row)] = fold(message)
        return {k: row[k] for k in ("urgency", "planned_date", "avis")}

    from datetime import date
    assert requested(urgency="PLANNED", planned_date="2025-04-02", avis=pb.AvisHad(eligible=True)) == {
        "urgency": "PLANNED", "planned_date": date(2025, 4, 2), "avis": "FAVOURABLE"}
    assert requested(urgency="WITHIN_24H", avis=pb.AvisHad(eligible=False, reason="MEDICAL_NOT_ELIGIBLE")) == {
        "urgency": "WITHIN_24H", "planned_date": None, "avis": "UNFAVOURABLE"}
    # No avis at all is not an unfavourable one; a malformed date is no date (measured as urgent).
    assert requested(urgency="PLANNED", planned_date="02/04/2025") == {"urgency": "PLANNED", "planned_date": None, "avis": None}


def test_a_declaration_folds_its_census_and_none_when_it_carries_none():
    from reflexe.v1 import capacity_pb2 as cpb
    from reflexe_indicators.domain.facts import DECLARATIONS
    declared = dict(had_finess="340780477", department="34", places_available=3, admissions_possible_today=1,
                    status="OPEN", declared_at=ts(T0), authorised_places=40)
    [(table, with_census)] = fold(cpb.CapacityDeclared(**declared, active_patients=0))
    assert table is DECLARATIONS and with_census["active_patients"] == 0  # zero patients is a census
    [(_, without)] = fold(cpb.CapacityDeclared(**declared))
    assert without["active_patients"] is None  # not declared: the platform's own patients count instead
    [(_, negative)] = fold(cpb.CapacityDeclared(**declared, active_patients=-4))
    assert negative["active_patients"] is None
    assert "active_patients = COALESCE(f.active_patients, EXCLUDED.active_patients)" in upsert_sql("g", DECLARATIONS)


# -- the evaluation before admission ------------------------------------------------------------

A, B = "340780477", "310781406"  # two HADs (valid FINESS)


def evaluation_path() -> list:
    """HAD A accepts pending evaluation, its liaison nurse gives an unfavourable avis, A withdraws;
    the referral goes back to the search and HAD B accepts pending evaluation, then confirms."""
    return [
        pb.ReferralRequested(header=header(0), request=pb.ReferralRequest(
            referral_id=RID, source=pb.Source(kind="WARD", finess="340000017"), requested_at=ts(T0))),
        pb.OfferMade(header=header(5), offer_id="o1", had_finess=A),
        pb.OfferAccepted(header=header(15), offer_id="o1", had_finess=A, pending_evaluation=True),
        pb.AvisGiven(header=pb.ReferralEventHeader(referral_id=RID, department="34", actor=f"liaison:{A}",
                                                   occurred_at=ts(T0 + timedelta(minutes=200))),
                     eligible=False, reason="MEDICAL_NOT_ELIGIBLE"),
        pb.AcceptanceWithdrawn(header=header(240), offer_id="o1", had_finess=A, reason="MEDICAL_NOT_ELIGIBLE"),
        pb.OfferMade(header=header(250), offer_id="o2", had_finess=B),
        pb.OfferAccepted(header=header(260), offer_id="o2", had_finess=B, pending_evaluation=True),
        pb.AvisGiven(header=pb.ReferralEventHeader(referral_id=RID, department="34", actor=f"liaison:{B}",
                                                   occurred_at=ts(T0 + timedelta(minutes=400))), eligible=True),
        pb.EvaluationConfirmed(header=header(500), offer_id="o2", had_finess=B),
        pb.PatientAdmitted(header=header(900), had_finess=B),
    ]


def test_a_withdrawn_acceptance_is_not_the_referrals_acceptance_in_any_order():
    reference = folded(evaluation_path())
    [ref] = reference["referral_facts"].values()
    # The referral is accepted when B confirms, not when A accepted pending evaluation (then withdrew).
    assert (ref["accepted_at"], ref["accepted_had"]) == (T0 + timedelta(minutes=500), B)
    withdrawn, confirmed = reference["offer_facts"][("o1",)], reference["offer_facts"][("o2",)]
    assert (withdrawn["outcome"], withdrawn["outcome_at"], withdrawn["pending_evaluation"]) == (
        "ACCEPTED", T0 + timedelta(minutes=15), True)
    assert (withdrawn["evaluation"], withdrawn["evaluated_at"], withdrawn["withdrawal_reason"]) == (
        "WITHDRAWN", T0 + timedelta(minutes=240), "MEDICAL_NOT_ELIGIBLE")
    assert (confirmed["evaluation"], confirmed["evaluated_at"], confirmed["withdrawal_reason"]) == (
        "CONFIRMED", T0 + timedelta(minutes=500), None)
    assert confirmed["made_at"] == T0 + timedelta(minutes=250) and confirmed["had_finess"] == B
    rng = random.Random(2)
    for _ in range(300):
        order = evaluation_path()
        rng.shuffle(order)
        assert folded(order) == reference
    assert folded(evaluation_path() + evaluation_path()[::3]) == reference  # redelivery


def test_a_plain_acceptance_is_the_referrals_acceptance_and_carries_no_evaluation():
    [(_, ref), (_, offer)] = fold(pb.OfferAccepted(header=header(20), offer_id="o1", had_finess=A))
    assert (ref["accepted_at"], ref["accepted_had"]) == (T0 + timedelta(minutes=20), A)
    assert offer["pending_evaluation"] is False and "evaluated_at" not in offer
    [(table, pending)] = fold(pb.OfferAccepted(header=header(20), offer_id="o1", had_finess=A, pending_evaluation=True))
    assert table is OFFERS and pending["pending_evaluation"] is True and pending["outcome"] == "ACCEPTED"


def test_each_avis_after_posting_is_a_fact_of_the_liaison_nurses_had():
    from reflexe_indicators.domain.facts import AVIS_AFTER_POSTING
    reference = folded(evaluation_path())["avis_facts"]
    assert sorted((row["given_at"], row["had_finess"], row["avis"], row["reason"]) for row in reference.values()) == [
        (T0 + timedelta(minutes=200), A, "UNFAVOURABLE", "MEDICAL_NOT_ELIGIBLE"),
        (T0 + timedelta(minutes=400), B, "FAVOURABLE", None)]
    # An actor that is not a liaison nurse names no HAD (the avis still counts for its department).
    [(table, row)] = fold(pb.AvisGiven(header=pb.ReferralEventHeader(
        referral_id=RID, department="34", actor="system", occurred_at=ts(T0)), eligible=True))
    assert table is AVIS_AFTER_POSTING and row["had_finess"] is None and row["department"] == "34"
    assert "ON CONFLICT (referral_id, given_at) DO UPDATE" in upsert_sql("g", AVIS_AFTER_POSTING)
    sql = upsert_sql("g", OFFERS)
    assert ("pending_evaluation = CASE WHEN (EXCLUDED.outcome_at IS NOT NULL AND (f.outcome_at IS NULL OR "
            "EXCLUDED.outcome_at < f.outcome_at))") in sql
    assert ("withdrawal_reason = CASE WHEN (EXCLUDED.evaluated_at IS NOT NULL AND (f.evaluated_at IS NULL OR "
            "EXCLUDED.evaluated_at < f.evaluated_at))") in sql
