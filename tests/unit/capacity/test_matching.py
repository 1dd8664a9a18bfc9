"""Matching: hard filters, ranking order, determinism, explanation."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from reflexe_capacity.domain import (
    CapacityDeclaration,
    Candidate,
    ExclusionRule,
    HadEstablishment,
    HadLedger,
    MatchRequest,
    desk_offer,
    match,
)
from reflexe_common.finess import with_key
from reflexe_common.vocabulary import CapacityStatus, Equipment, Mention, PlaceOfCare, Urgency

NOW = datetime(2024, 3, 12, 10, 0, tzinfo=UTC)
STALE_AFTER = timedelta(hours=2)
COMMUNE = "34172"  # Montpellier
EHPAD = "340000017"


def had(finess: str = "340001007", **changes) -> HadEstablishment:
    base = HadEstablishment(
        finess=finess,
        name=f"HAD {finess[-4:-1]}",  # the sequence before the check key
        departments=frozenset({"34"}),
        mentions=frozenset({Mention.SOCLE}),
        mpp_supported=frozenset({"03", "04", "07"}),
        equipment=frozenset({Equipment.SYRINGE_DRIVER}),
        zone_communes=frozenset({COMMUNE}),
        authorised_places=20,
    )
    return dataclasses.replace(base, **changes)


def ledger(
    finess: str = "340001007",
    places: int = 4,
    status: CapacityStatus = CapacityStatus.OPEN,
    age: timedelta = timedelta(minutes=10),
    admissions_today: int = 3,
) -> HadLedger:
    book = HadLedger(finess)
    book.declare(CapacityDeclaration(finess, places, admissions_today, status, NOW - age))
    return book


def candidate(finess: str = "340001007", median: float | None = 600.0, had_changes=None, **ledger_args) -> Candidate:
    return Candidate(had(finess, **(had_changes or {})), ledger(finess, **ledger_args), median)


def request(**changes) -> MatchRequest:
    base = MatchRequest(
        referral_id="r-1",
        department="34",
        care_commune=COMMUNE,
        place_of_care=PlaceOfCare.HOME,
        ehpad_finess=None,
        main_mpp="04",
        associated_mpp=("07",),
        equipment=frozenset({Equipment.SYRINGE_DRIVER}),
        patient_birth_year=NOW.year - 82,
        requested_on=NOW.date(),
        urgency=Urgency.WITHIN_24H,
    )
    return dataclasses.replace(base, **changes)


def exclusion_rule(req: MatchRequest, cand: Candidate) -> ExclusionRule | None:
    decision = match(req, [cand], NOW, STALE_AFTER)
    return decision.excluded[0].rule if decision.excluded else None


def test_an_eligible_had_is_chosen():
    decision = match(request(), [candidate()], NOW, STALE_AFTER)
    assert decision.chosen == "340001007"
    assert decision.excluded == ()


# ---- each hard filter --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("req_changes", "had_changes", "ledger_args", "rule"),
    [
        ({"excluded_hads": frozenset({"340001007"})}, {}, {}, ExclusionRule.ALREADY_TRIED),
        ({}, {"departments": frozenset({"30"})}, {}, ExclusionRule.OUT_OF_DEPARTMENT),
        ({"care_commune": "34032"}, {}, {}, ExclusionRule.OUT_OF_ZONE),
        ({"main_mpp": "11"}, {"mpp_supported": frozenset({"11", "07"})}, {}, ExclusionRule.MENTION_MISSING),
        ({"main_mpp": "19", "associated_mpp": ()}, {"mpp_supported": frozenset({"19"})}, {}, ExclusionRule.MENTION_MISSING),
        ({"main_mpp": "22", "associated_mpp": ()}, {"mpp_supported": frozenset({"22"})}, {}, ExclusionRule.MENTION_MISSING),
        ({"associated_mpp": ("12",)}, {"mpp_supported": frozenset({"04", "12"})}, {}, ExclusionRule.MENTION_MISSING),
        ({"associated_mpp": ("21",)}, {"mpp_supported": frozenset({"04", "21"})}, {}, ExclusionRule.MENTION_MISSING),
        ({"patient_birth_year": NOW.year - 2}, {}, {}, ExclusionRule.MENTION_MISSING),
        ({"main_mpp": "05"}, {}, {}, ExclusionRule.MPP_NOT_SUPPORTED),
        ({"associated_mpp": ("25",)}, {}, {}, ExclusionRule.MPP_NOT_SUPPORTED),
        ({"equipment": frozenset({Equipment.PCA_PUMP})}, {}, {}, ExclusionRule.EQUIPMENT_NOT_SUPPORTED),
        ({}, {}, {"status": CapacityStatus.SATURATED}, ExclusionRule.NOT_OPEN),
        ({}, {}, {"status": CapacityStatus.CLOSED}, ExclusionRule.NOT_OPEN),
        ({}, {}, {"places": 0}, ExclusionRule.NO_LIVE_PLACE),
        ({}, {}, {"admissions_today": 0}, ExclusionRule.NO_ADMISSION_TODAY),
    ],
)
def test_each_hard_filter_excludes(req_changes, had_changes, ledger_args, rule):
    cand = candidate(had_changes=had_changes, **ledger_args)
    assert exclusion_rule(request(**req_changes), cand) is rule


def test_no_declaration_excludes():
    cand = Candidate(had(), HadLedger("340001007"), None)
    assert exclusion_rule(request(), cand) is ExclusionRule.NO_DECLARATION


def test_the_mention_held_lets_the_case_through():
    mentions = frozenset({Mention.READAPTATION, Mention.ENFANTS_MOINS_3_ANS})
    cand = candidate(had_changes={"mentions": mentions, "mpp_supported": frozenset({"12", "07"})})
    assert exclusion_rule(request(main_mpp="12", patient_birth_year=NOW.year - 1), cand) is None


def test_missing_mentions_are_named_in_french():
    cand = candidate(had_changes={"mpp_supported": frozenset({"11", "07"})})
    decision = match(request(main_mpp="11", patient_birth_year=NOW.year - 1), [cand], NOW, STALE_AFTER)
    assert decision.excluded[0].detail == "mention manquante : enfants de moins de 3 ans, réadaptation"


def test_widened_departments_reach_a_neighbouring_had():
    cand = candidate(had_changes={"departments": frozenset({"30"})})
    assert exclusion_rule(request(departments=frozenset({"30"})), cand) is None


def test_planned_referrals_ignore_the_daily_admission_limit():
    cand = candidate(admissions_today=0)
    assert exclusion_rule(request(urgency=Urgency.PLANNED), cand) is None


def test_a_live_place_taken_by_holds_excludes():
    cand = candidate(places=1)
    cand.ledger.place_hold("h-1", "r-other", NOW, timedelta(minutes=30))
    assert exclusion_rule(request(), cand) is ExclusionRule.NO_LIVE_PLACE


def test_the_first_failing_rule_is_reported():
    # Out of zone AND saturated AND already tried: the earliest rule wins.
    cand = candidate(status=CapacityStatus.SATURATED)
    req = request(care_commune="34032", excluded_hads=frozenset({"340001007"}))
    assert exclusion_rule(req, cand) is ExclusionRule.ALREADY_TRIED
    assert exclusion_rule(dataclasses.replace(req, excluded_hads=frozenset()), cand) is ExclusionRule.OUT_OF_ZONE


def test_every_had_appears_exactly_once():
    cands = [
        candidate("340001015"),
        candidate("340001023", status=CapacityStatus.CLOSED),
        candidate("340001031", places=0),
        candidate("340001049"),
    ]
    decision = match(request(), cands, NOW, STALE_AFTER)
    seen = [r.had_finess for r in decision.ranked] + [e.had_finess for e in decision.excluded]
    assert sorted(seen) == sorted(c.had.finess for c in cands)


def test_a_had_passed_twice_is_an_error():
    with pytest.raises(ValueError):
        match(request(), [candidate(), candidate()], NOW, STALE_AFTER)


# ---- ranking -----------------------------------------------------------------------------


def ranking_field() -> list[Candidate]:
    """Each HAD beats the next one on exactly one criterion, in the rules' order."""
    return [
        # 1. convention with the patient's EHPAD, even stale with few places and slow.
        candidate("340009018", median=None, places=1, age=timedelta(hours=5),
                  had_changes={"ehpad_conventions": frozenset({EHPAD})}),
        # 2. fresh declaration, even with few places.
        candidate("340009026", median=None, places=1),
        # 3. most places relative to size (10/20) beats 5/20...
        candidate("340009034", median=None, places=10, age=timedelta(hours=3)),
        # 4. ...same ratio 5/20: the faster median answer first,
        candidate("340009042", median=300.0, places=5, age=timedelta(hours=3)),
        # 5. a slower one,
        candidate("340009059", median=900.0, places=5, age=timedelta(hours=3)),
        # 6. then unknown median; same ratio (10/40 = 5/20): FINESS breaks the tie.
        candidate("340009067", median=None, places=10, age=timedelta(hours=3),
                  had_changes={"authorised_places": 40}),
        candidate("340009075", median=None, places=5, age=timedelta(hours=3)),
    ]


def test_full_ranking_order():
    req = request(place_of_care=PlaceOfCare.EHPAD, ehpad_finess=EHPAD)
    decision = match(req, ranking_field(), NOW, STALE_AFTER)
    assert [r.had_finess for r in decision.ranked] == [with_key(f"3400090{i}") for i in range(1, 8)]
    assert decision.chosen == "340009018"
    first = decision.ranked[0]
    assert (first.ehpad_convention, first.fresh, first.live_places) == (True, False, 1)


def test_a_convention_counts_only_for_a_patient_in_that_ehpad():
    decision = match(request(), ranking_field(), NOW, STALE_AFTER)  # patient at home
    assert decision.chosen == "340009026"
    assert not any(r.ehpad_convention for r in decision.ranked)


def test_matching_is_deterministic_whatever_the_candidates_order():
    req = request(place_of_care=PlaceOfCare.EHPAD, ehpad_finess=EHPAD)
    field = ranking_field() + [candidate("340000801", status=CapacityStatus.SATURATED),
                               candidate("340008028", had_changes={"zone_communes": frozenset()})]
    reference = match(req, field, NOW, STALE_AFTER)
    shuffler = random.Random(1234)
    for _ in range(50):
        shuffled = field[:]
        shuffler.shuffle(shuffled)
        assert match(req, shuffled, NOW, STALE_AFTER) == reference


def test_match_changes_no_ledger():
    cands = ranking_field()
    versions = [c.ledger.version for c in cands]
    match(request(), cands, NOW, STALE_AFTER)
    assert [c.ledger.version for c in cands] == versions


# ---- explanation -------------------------------------------------------------------------


def test_explanation_names_the_choice_its_reasons_and_the_exclusions():
    cands = [
        candidate("340001007", places=4, had_changes={"name": "HAD Montpellier", "ehpad_conventions": frozenset({EHPAD})}),
        candidate("340002005", places=9, had_changes={"name": "HAD Sète"}),
        candidate("340003003", had_changes={"name": "HAD Lunel", "zone_communes": frozenset()}),
        candidate("340004001", status=CapacityStatus.SATURATED, had_changes={"name": "HAD Béziers"}),
    ]
    req = request(place_of_care=PlaceOfCare.EHPAD, ehpad_finess=EHPAD)
    text = match(req, cands, NOW, STALE_AFTER).explain()
    assert text.startswith("Proposé à HAD Montpellier (340001007) : convention EHPAD, déclaration fraîche, 4/20 places libres")
    assert "réponse médiane 10 min" in text
    assert "ensuite : HAD Sète" in text
    assert "exclus : HAD Lunel (hors zone), HAD Béziers (saturée)" in text


def test_explanation_of_stale_declaration_and_escalation():
    stale = match(request(), [candidate(age=timedelta(hours=3), median=None)], NOW, STALE_AFTER)
    assert "déclaration ancienne (il y a 3 h 00 min)" in stale.explain()
    assert "délai de réponse inconnu" in stale.explain()
    nobody = match(request(), [candidate(places=0)], NOW, STALE_AFTER)
    assert nobody.chosen is None
    assert nobody.explain() == (
        "Aucune HAD disponible : à traiter par le bureau de coordination; "
        "exclus : HAD 100 (aucune place libre)."
    )


def test_as_dict_is_json_ready():
    decision = match(request(), [candidate("340001007"), candidate("340002005", places=0)], NOW, STALE_AFTER)
    data = json.loads(json.dumps(decision.as_dict()))
    assert data["chosen"] == "340001007"
    assert data["ranked"][0]["rank"] == 1
    assert data["ranked"][0]["live_places"] == 4
    assert data["excluded"] == [
        {"had_finess": "340002005", "had_name": "HAD 200", "rule": "NO_LIVE_PLACE", "detail": "aucune place libre"}
    ]


# ---- the desk's choice -------------------------------------------------------------------


def test_the_desk_may_override_zone_mention_and_already_tried():
    cand = candidate(had_changes={"zone_communes": frozenset(), "departments": frozenset({"30"})})
    req = request(main_mpp="11", excluded_hads=frozenset({"340001007"}), equipment=frozenset({Equipment.OXYGEN}))
    decision = desk_offer(req, cand, NOW, STALE_AFTER)
    assert decision.chosen == "340001007"


@pytest.mark.parametrize(
    ("ledger_args", "rule"),
    [
        ({"status": CapacityStatus.CLOSED}, ExclusionRule.NOT_OPEN),
        ({"places": 0}, ExclusionRule.NO_LIVE_PLACE),
    ],
)
def test_the_desk_never_overrides_capacity(ledger_args, rule):
    decision = desk_offer(request(), candidate(**ledger_args), NOW, STALE_AFTER)
    assert decision.chosen is None
    assert decision.excluded[0].rule is rule


def test_the_desk_cannot_offer_to_a_had_that_never_declared():
    decision = desk_offer(request(), Candidate(had(), HadLedger("340001007")), NOW, STALE_AFTER)
    assert decision.excluded[0].rule is ExclusionRule.NO_DECLARATION


@pytest.mark.parametrize(("years_since_birth", "needs_mention"), [(0, True), (2, True), (3, True), (4, False), (82, False)])
def test_a_child_who_may_be_under_3_needs_the_mention_with_a_birth_year_only(years_since_birth, needs_mention):
    # Born three calendar years ago, the child is 2 until its birthday, which the platform does
    # not know: the mention is required (year minus birth year would say 3 and let it through).
    req = request(patient_birth_year=NOW.year - years_since_birth, requested_on=NOW.date())
    assert (Mention.ENFANTS_MOINS_3_ANS in req.required_mentions()) is needs_mention
    assert (exclusion_rule(req, candidate()) is ExclusionRule.MENTION_MISSING) is needs_mention
    holder = candidate(had_changes={"mentions": frozenset({Mention.ENFANTS_MOINS_3_ANS})})
    assert exclusion_rule(req, holder) is None
