"""Consents as conditions: a referral lacking patient consent or GP agreement waits as INCOMPLETE,
is never offered, and starts its search when a version-checked update supplies them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from reflexe_common.vocabulary import Reason
from reflexe_referral.adapters import codec
from reflexe_referral.domain import (
    AvisHad,
    ClockKind,
    Conditions,
    ErrorCode,
    OfferWithdrawn,
    Referral,
    ReferralCompleted,
    ReferralRequested,
    ReferralRequestUpdated,
    StaleVersion,
    Status,
)

from tests.unit.referral.test_lifecycle import HAD_A, HOLD, Story

HOSPITAL = "hospital:340780477"
ALL_GIVEN = Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True)


@pytest.fixture
def story(make_request) -> Story:
    return Story(make_request())


@pytest.fixture
def waiting(make_request) -> Story:
    """Posted by the ED before the GP could be reached."""
    return Story(make_request(conditions__gp_agreement=False))


def test_a_referral_without_gp_agreement_waits_as_incomplete(waiting):
    referral = waiting.referral
    assert referral.status is Status.INCOMPLETE and referral.is_open
    assert referral.missing_conditions == ("gp_agreement",)
    assert waiting.history[0].missing_conditions == ("gp_agreement",)


def test_every_missing_condition_is_named_and_a_caregiver_is_not_one(make_request):
    story = Story(make_request(conditions__patient_consent=False, conditions__gp_agreement=False,
                               conditions__caregiver_present=False))
    assert story.referral.missing_conditions == ("patient_consent", "gp_agreement")
    assert Story(make_request(conditions__caregiver_present=False)).referral.status is Status.REQUESTED


def test_a_negative_avis_closes_the_referral_whatever_is_missing(make_request):
    avis = AvisHad(eligible=False, reason=Reason.MEDICAL_NOT_ELIGIBLE, text="")
    story = Story(make_request(avis=avis, conditions__patient_consent=False))
    assert story.referral.status is Status.INELIGIBLE and story.referral.missing_conditions == ()


def test_an_incomplete_referral_runs_no_offer_clock_but_the_admission_target_still_counts(waiting):
    clocks = waiting.referral.clocks()
    assert [c.kind for c in clocks] == [ClockKind.ADMISSION_OVERDUE]
    assert clocks[0].due_at == waiting.t0 + timedelta(hours=24)


def test_an_incomplete_referral_takes_no_offer_the_matcher_might_still_send(waiting):
    events = waiting.do("record_offer", "o1", HAD_A, waiting.at(1) + HOLD, "", False, waiting.at(1))
    assert [type(e) for e in events] == [OfferWithdrawn]
    assert waiting.referral.status is Status.INCOMPLETE and waiting.referral.tried_hads == frozenset()


def test_the_desk_cannot_steer_an_incomplete_referral_but_may_close_it(waiting):
    waiting.refused(ErrorCode.CONDITIONS_MISSING, "widen", ["30"], waiting.at(1))
    waiting.refused(ErrorCode.CONDITIONS_MISSING, "desk_offer", HAD_A, waiting.at(1))
    waiting.do("cancel", Reason.GP_REFUSED, "", waiting.at(2), actor="desk:34")
    assert waiting.referral.status is Status.CANCELLED


def test_the_update_giving_the_last_condition_completes_the_referral(waiting):
    events = waiting.do("update_request", ALL_GIVEN, 1, waiting.at(30), HOSPITAL)
    assert [type(e) for e in events] == [ReferralRequestUpdated, ReferralCompleted]
    updated = events[0]
    assert updated.actor == HOSPITAL and events[1].actor == HOSPITAL
    assert updated.changed_fields == ("conditions.gp_agreement",) and updated.missing_conditions == ()
    referral = waiting.referral
    assert referral.status is Status.REQUESTED and referral.missing_conditions == ()
    assert referral.request.conditions == ALL_GIVEN and referral.version == 3
    # From here on it is searched like any new referral.
    waiting.offered(minute=31)
    assert waiting.referral.status is Status.OFFERED


def test_an_update_that_leaves_a_condition_missing_keeps_it_waiting(make_request):
    story = Story(make_request(conditions__patient_consent=False, conditions__gp_agreement=False))
    events = story.do("update_request", Conditions(True, False, True), 1, story.at(5), HOSPITAL)
    assert [type(e) for e in events] == [ReferralRequestUpdated]
    assert events[0].missing_conditions == ("gp_agreement",)
    assert story.referral.status is Status.INCOMPLETE


def test_an_update_on_a_stale_version_is_refused_and_changes_nothing(waiting):
    waiting.refused(ErrorCode.STALE_VERSION, "update_request", ALL_GIVEN, 0, waiting.at(5), HOSPITAL)
    with pytest.raises(StaleVersion) as stale:
        waiting.referral.update_request(ALL_GIVEN, 7, waiting.at(5), HOSPITAL)
    assert (stale.value.expected, stale.value.current) == (7, 1)


def test_anything_that_happened_since_the_read_makes_the_version_stale(story):
    read_version = story.referral.version
    story.offered()  # the matcher was faster than the hospital
    story.refused(ErrorCode.STALE_VERSION, "update_request", Conditions(True, True, False), read_version,
                  story.at(2), HOSPITAL)


def test_an_update_changing_nothing_records_nothing(waiting):
    assert waiting.do("update_request", waiting.referral.request.conditions, 1, waiting.at(5), HOSPITAL) == []
    assert waiting.referral.version == 1


def test_a_consent_given_cannot_be_withdrawn_by_an_update(story):
    story.refused(ErrorCode.CONDITION_WITHDRAWN, "update_request", Conditions(False, True, True), 1,
                  story.at(5), HOSPITAL)


def test_the_caregiver_may_change_while_an_offer_is_out(story):
    story.offered()
    events = story.do("update_request", Conditions(True, True, False), story.referral.version, story.at(3), HOSPITAL)
    assert [type(e) for e in events] == [ReferralRequestUpdated]
    assert story.referral.status is Status.OFFERED and story.referral.current_offer is not None


def test_no_update_once_an_had_has_accepted_or_the_referral_is_closed(story, make_request):
    story.accepted()
    story.refused(ErrorCode.INVALID_STATE, "update_request", Conditions(True, True, False), story.referral.version,
                  story.at(10), HOSPITAL)
    closed = Story(make_request(conditions__gp_agreement=False)).cancelled()
    closed.refused(ErrorCode.ALREADY_CLOSED, "update_request", ALL_GIVEN, closed.referral.version,
                   closed.at(10), HOSPITAL)


def test_an_old_history_offered_without_consent_still_folds_and_is_not_made_incomplete(make_request):
    """Before consents were conditions, a referral without them was offered: its events carry no
    missing conditions, and an update giving them now records the change without completing."""
    old = Story(make_request(conditions__patient_consent=False))
    legacy_first = ReferralRequested(referral_id=old.history[0].referral_id, occurred_at=old.t0,
                                     actor=HOSPITAL, request=old.history[0].request)
    legacy = Story.__new__(Story)
    legacy.t0, legacy.history = old.t0, [legacy_first]
    legacy.referral = Referral.from_events(legacy.history)
    legacy.offered()
    assert legacy.referral.status is Status.OFFERED
    events = legacy.do("update_request", ALL_GIVEN, legacy.referral.version, legacy.at(2), HOSPITAL)
    assert [type(e) for e in events] == [ReferralRequestUpdated]


def test_the_new_events_survive_their_protobuf_form(waiting):
    waiting.do("update_request", ALL_GIVEN, 1, waiting.at(30), HOSPITAL)
    for event in waiting.history:
        assert codec.from_proto(codec.to_proto(event, "34")) == event
    assert Referral.from_events(waiting.history) == waiting.referral
