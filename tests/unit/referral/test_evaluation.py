"""The liaison nurse's evaluation before admission: the avis HAD given after posting, an acceptance
pending evaluation, then confirmed or withdrawn (the search goes on as after a decline)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from reflexe_common.vocabulary import Reason
from reflexe_referral.adapters.codec import from_proto, to_proto
from reflexe_referral.domain import (
    AcceptanceWithdrawn,
    AvisGiven,
    ClockKind,
    ErrorCode,
    EvaluationConfirmed,
    IllegalTransition,
    InvalidRequest,
    OfferAccepted,
    PatientAdmitted,
    Referral,
    ReferralDeclaredIneligible,
    Status,
)

HAD_A, HAD_B = "340000181", "340000264"
HOLD = timedelta(minutes=30)


class Story:
    def __init__(self, request) -> None:
        self.t0 = request.requested_at
        self.history = Referral.request(request, self.t0)
        self.referral = Referral.from_events(self.history)

    def at(self, minutes: float) -> datetime:
        return self.t0 + timedelta(minutes=minutes)

    def do(self, decision: str, *args, **kwargs):
        events = getattr(self.referral, decision)(*args, **kwargs)
        for event in events:
            self.referral.apply(event)
        self.history.extend(events)
        return events

    def refused(self, code: ErrorCode, decision: str, *args) -> None:
        version = self.referral.version
        with pytest.raises(IllegalTransition) as refusal:
            self.do(decision, *args)
        assert refusal.value.code == code
        assert self.referral.version == version

    def offered(self, offer_id: str = "o1", had: str = HAD_A, minute: float = 1) -> Story:
        self.do("record_offer", offer_id, had, self.at(minute) + HOLD, "covers 34172", False, self.at(minute))
        return self

    def pending(self) -> Story:
        self.offered().do("accept", "o1", HAD_A, self.at(5), pending_evaluation=True)
        return self


@pytest.fixture
def story(make_request) -> Story:
    return Story(make_request())


def test_a_favourable_avis_after_posting_is_recorded_with_the_liaison_as_actor(story):
    events = story.do("give_avis", HAD_A, True, None, "domicile adapté", story.at(10))
    assert [type(e) for e in events] == [AvisGiven]
    assert events[0].actor == f"liaison:{HAD_A}" and events[0].eligible
    assert story.referral.avis is not None and story.referral.avis.eligible
    assert story.referral.status is Status.REQUESTED
    assert Referral.from_events(story.history) == story.referral


def test_an_unfavourable_avis_while_searching_closes_the_referral_as_ineligible(story):
    events = story.do("give_avis", HAD_A, False, Reason.SOCIAL_NOT_ELIGIBLE, "vit seul", story.at(10))
    assert [type(e) for e in events] == [AvisGiven, ReferralDeclaredIneligible]
    assert story.referral.status is Status.INELIGIBLE
    assert story.referral.closed_reason is Reason.SOCIAL_NOT_ELIGIBLE
    assert Referral.from_events(story.history).status is Status.INELIGIBLE


def test_an_unfavourable_avis_while_an_had_holds_a_place_is_recorded_and_leaves_it_to_that_had(story):
    story.pending()
    events = story.do("give_avis", HAD_A, False, Reason.MEDICAL_NOT_ELIGIBLE, "", story.at(30))
    assert [type(e) for e in events] == [AvisGiven]
    assert story.referral.status is Status.ACCEPTED and story.referral.evaluation_pending


def test_an_unfavourable_avis_needs_a_reason(story):
    with pytest.raises(InvalidRequest):
        story.referral.give_avis(HAD_A, False, None, "", story.at(10))


def test_an_avis_is_refused_on_a_closed_or_admitted_referral(story):
    story.do("cancel", Reason.PATIENT_HOSPITALISED, "", story.at(2))
    story.refused(ErrorCode.ALREADY_CLOSED, "give_avis", HAD_A, True, None, "", story.at(10))


def test_an_acceptance_pending_evaluation_keeps_the_place_without_a_hold_clock(story):
    story.pending()
    referral = story.referral
    assert referral.status is Status.ACCEPTED and referral.evaluation_pending
    assert referral.accepted_had == HAD_A and referral.accepted_offer_id == "o1"
    assert [c.kind for c in referral.clocks()] == [ClockKind.ADMISSION_OVERDUE]


def test_a_confirmed_evaluation_is_an_acceptance_as_any_other(story):
    story.pending()
    events = story.do("confirm_evaluation", HAD_A, story.at(120))
    assert [type(e) for e in events] == [EvaluationConfirmed]
    assert story.referral.status is Status.ACCEPTED and not story.referral.evaluation_pending
    assert [type(e) for e in story.do("admit", HAD_A, story.at(300))] == [PatientAdmitted]


def test_admission_waits_for_the_confirmation(story):
    story.pending()
    story.refused(ErrorCode.EVALUATION_PENDING, "admit", HAD_A, story.at(300))


def test_a_withdrawal_sends_the_referral_back_to_the_search_and_another_had_can_be_offered_it(story):
    story.pending()
    events = story.do("withdraw_acceptance", HAD_A, Reason.MEDICAL_NOT_ELIGIBLE, "trop instable", story.at(120))
    assert [type(e) for e in events] == [AcceptanceWithdrawn]
    assert (events[0].offer_id, events[0].had_finess) == ("o1", HAD_A)
    referral = story.referral
    assert referral.status is Status.REQUESTED and referral.accepted_had is None
    assert not referral.evaluation_pending and HAD_A in referral.tried_hads
    story.offered("o2", HAD_B, minute=121)
    assert story.referral.current_offer.had_finess == HAD_B
    assert Referral.from_events(story.history) == story.referral


def test_confirm_or_withdraw_needs_an_acceptance_pending_evaluation_by_the_caller(story):
    story.offered().do("accept", "o1", HAD_A, story.at(5))
    story.refused(ErrorCode.NO_PENDING_EVALUATION, "confirm_evaluation", HAD_A, story.at(10))
    story.refused(ErrorCode.NO_PENDING_EVALUATION, "withdraw_acceptance", HAD_A, Reason.OTHER, "", story.at(10))
    story.refused(ErrorCode.NOT_ACCEPTED, "confirm_evaluation", HAD_B, story.at(10))


def test_a_withdrawn_acceptance_cannot_be_confirmed(story):
    story.pending()
    story.do("withdraw_acceptance", HAD_A, Reason.OTHER, "", story.at(60))
    story.refused(ErrorCode.NOT_ACCEPTED, "confirm_evaluation", HAD_A, story.at(61))


def test_the_new_events_survive_the_event_log_codec(story):
    story.pending()
    story.do("give_avis", HAD_A, False, Reason.MEDICAL_NOT_ELIGIBLE, "à revoir", story.at(20))
    story.do("withdraw_acceptance", HAD_A, Reason.MEDICAL_NOT_ELIGIBLE, "instable", story.at(30))
    for event in story.history[1:]:
        if isinstance(event, (OfferAccepted, AvisGiven, AcceptanceWithdrawn)):
            assert from_proto(to_proto(event, "34")) == event
    story.offered("o2", HAD_B, minute=40).do("accept", "o2", HAD_B, story.at(41), pending_evaluation=True)
    confirmed = story.do("confirm_evaluation", HAD_B, story.at(50))[0]
    assert from_proto(to_proto(confirmed, "34")) == confirmed


def test_an_unfavourable_avis_closes_an_incomplete_referral_too(make_request):
    story = Story(make_request(conditions__patient_consent=False))
    assert story.referral.status is Status.INCOMPLETE
    events = story.do("give_avis", HAD_A, False, Reason.PATIENT_REFUSED, "", story.at(10))
    assert [type(e) for e in events] == [AvisGiven, ReferralDeclaredIneligible]
    assert Referral.from_events(story.history).status is Status.INELIGIBLE
