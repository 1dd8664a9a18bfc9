"""The referral lifecycle: legal transitions, refusals, idempotency and folding."""

from __future__ import annotations

import copy
from datetime import date, datetime, timedelta

import pytest

from reflexe_common.vocabulary import PlaceOfCare, Reason, Urgency
from reflexe_referral.domain import (
    AdmissionOverdue,
    AvisHad,
    ClockKind,
    DeskOfferRequested,
    ErrorCode,
    Event,
    IllegalTransition,
    InconsistentHistory,
    InvalidRequest,
    OfferAccepted,
    OfferExpired,
    OfferMade,
    OfferUnanswered,
    OfferWithdrawn,
    Referral,
    ReferralCancelled,
    ReferralDeclaredIneligible,
    ReferralEscalated,
    ReferralRequested,
    SearchWidened,
    Status,
)

HAD_A, HAD_B, HAD_C = "340000181", "340000264", "34000003A"
HOLD = timedelta(minutes=30)
MINUTE = timedelta(minutes=1)


class Story:
    """A referral and its history, moved forward through the decision methods only."""

    def __init__(self, request) -> None:
        self.t0 = request.requested_at
        self.history: list[Event] = Referral.request(request, self.t0)
        self.referral = Referral.from_events(self.history)

    def at(self, minutes: float) -> datetime:
        return self.t0 + timedelta(minutes=minutes)

    def do(self, decision: str, *args, **kwargs) -> list[Event]:
        events = getattr(self.referral, decision)(*args, **kwargs)
        for event in events:
            self.referral.apply(event)
        self.history.extend(events)
        return events

    def refused(self, code: ErrorCode, decision: str, *args, **kwargs) -> None:
        before = copy.deepcopy(self.referral)
        with pytest.raises(IllegalTransition) as refusal:
            self.do(decision, *args, **kwargs)
        assert refusal.value.code == code
        assert self.referral == before  # nothing changed

    # Shortcuts to reach a state.
    def offered(self, offer_id: str = "o1", had: str = HAD_A, minute: float = 1) -> Story:
        self.do("record_offer", offer_id, had, self.at(minute) + HOLD, "covers 34172", False,
                self.at(minute))
        return self

    def accepted(self) -> Story:
        self.offered().do("accept", "o1", HAD_A, self.at(5))
        return self

    def admitted(self) -> Story:
        self.accepted().do("admit", HAD_A, self.at(300))
        return self

    def discharged(self) -> Story:
        self.admitted().do("discharge", HAD_A, self.at(20_000))
        return self

    def escalated(self) -> Story:
        self.do("escalate", "no HAD covers the commune", self.at(1))
        return self

    def cancelled(self) -> Story:
        self.do("cancel", Reason.PATIENT_HOSPITALISED, "admitted to cardiology", self.at(2))
        return self


@pytest.fixture
def story(make_request) -> Story:
    return Story(make_request())


@pytest.fixture
def ineligible(make_request) -> Story:
    avis = AvisHad(eligible=False, reason=Reason.SOCIAL_NOT_ELIGIBLE, text="lives alone")
    return Story(make_request(avis=avis))


# ---- the request -------------------------------------------------------------------------


def test_a_request_opens_a_referral_searching_its_own_department(story):
    referral = story.referral
    assert referral.request is referral.data and referral.request.department == "34"
    assert [type(e) for e in story.history] == [ReferralRequested]
    assert story.history[0].actor == "hospital:340780477"
    assert referral.status is Status.REQUESTED and referral.is_open
    assert referral.departments == ("34",) and referral.department == "34"
    assert referral.current_offer is None and referral.tried_hads == frozenset()
    assert referral.version == 1


def test_a_negative_avis_makes_the_referral_ineligible_at_once(ineligible):
    assert [type(e) for e in ineligible.history] == [ReferralRequested, ReferralDeclaredIneligible]
    assert ineligible.referral.status is Status.INELIGIBLE
    assert ineligible.referral.closed_reason is Reason.SOCIAL_NOT_ELIGIBLE
    assert not ineligible.referral.is_open
    assert ineligible.referral.clocks() == []


def test_a_positive_avis_keeps_the_referral_requested(make_request):
    avis = AvisHad(eligible=True, reason=None, text="eligible, PSE at home")
    assert Story(make_request(avis=avis)).referral.status is Status.REQUESTED


def test_an_invalid_request_is_refused_with_its_problems(make_request):
    request = make_request(clinical__karnofsky=45, source__finess="34078")
    with pytest.raises(InvalidRequest) as refusal:
        Referral.request(request, request.requested_at)
    assert refusal.value.code == ErrorCode.INVALID_REQUEST
    assert {path for path, _ in refusal.value.problems} == {"clinical.karnofsky", "source.finess"}


def test_the_builder_request_is_valid(make_request):
    assert make_request().validate() == []


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"clinical__main_mpp": "25"}, "clinical.main_mpp"),  # associated-only code
        ({"clinical__main_mpp": "16"}, "clinical.main_mpp"),  # not a code
        ({"clinical__associated_mpp": ("99",)}, "clinical.associated_mpp[0]"),
        ({"clinical__associated_mpp": ("07", "04")}, "clinical.associated_mpp[1]"),
        ({"clinical__associated_mpp": ("07", "07")}, "clinical.associated_mpp[1]"),
        ({"clinical__karnofsky": 110}, "clinical.karnofsky"),
        ({"clinical__karnofsky": -10}, "clinical.karnofsky"),
        ({"clinical__karnofsky": 35}, "clinical.karnofsky"),
        ({"clinical__urgency": Urgency.PLANNED}, "clinical.planned_date"),
        ({"clinical__expected_duration_days": 0}, "clinical.expected_duration_days"),
        ({"patient__place_of_care": PlaceOfCare.EHPAD}, "patient.ehpad_finess"),
        ({"patient__ehpad_finess": "340111111"}, "patient.ehpad_finess"),  # at HOME
        (
            {"patient__place_of_care": PlaceOfCare.EHPAD, "patient__ehpad_finess": "3400x1111"},
            "patient.ehpad_finess",
        ),
        ({"source__finess": "3407804770"}, "source.finess"),
        ({"source__finess": "34078047c"}, "source.finess"),
        ({"patient__birth_year": 1899}, "patient.birth_year"),
        ({"patient__birth_year": 2026}, "patient.birth_year"),  # after the request year
        ({"requested_at": datetime(2025, 3, 10, 14, 0)}, "requested_at"),
        ({"avis": AvisHad(eligible=False, reason=None, text="?")}, "avis.reason"),
    ],
)
def test_validation_reports_each_broken_rule(make_request, overrides, path):
    assert [p for p, _ in make_request(**overrides).validate()] == [path]


@pytest.mark.parametrize(
    "overrides",
    [
        {"clinical__urgency": Urgency.PLANNED, "clinical__planned_date": date(2025, 3, 14)},
        {"patient__place_of_care": PlaceOfCare.EHPAD, "patient__ehpad_finess": "2A0001236"},
        {"clinical__karnofsky": 0},
        {"clinical__karnofsky": 100},
        {"patient__birth_year": 2025},  # a newborn (MPP 22 exists for them)
        {"clinical__associated_mpp": ("25",)},
    ],
)
def test_validation_accepts_the_edge_cases(make_request, overrides):
    assert make_request(**overrides).validate() == []


# ---- legal transitions -------------------------------------------------------------------


def test_the_nominal_path_to_discharge(story):
    story.offered()
    offer = story.referral.current_offer
    assert story.referral.status is Status.OFFERED
    assert (offer.offer_id, offer.had_finess, offer.hold_until) == ("o1", HAD_A, story.at(31))
    assert (offer.made_at, offer.explanation, offer.by_desk) == (story.at(1), "covers 34172", False)
    assert story.referral.tried_hads == {HAD_A}
    assert story.history[-1].actor == "system"

    [accepted] = story.do("accept", "o1", HAD_A, story.at(5))
    assert isinstance(accepted, OfferAccepted) and accepted.actor == f"had:{HAD_A}"
    assert story.referral.status is Status.ACCEPTED
    assert story.referral.accepted_had == HAD_A and story.referral.current_offer is None

    story.do("admit", HAD_A, story.at(300))
    assert story.referral.status is Status.ADMITTED and story.referral.is_open
    story.do("discharge", HAD_A, story.at(20_000))
    assert story.referral.status is Status.DISCHARGED and not story.referral.is_open

    r = story.referral
    assert (r.first_offer_at, r.accepted_at, r.admitted_at, r.discharged_at) == (
        story.at(1), story.at(5), story.at(300), story.at(20_000),
    )
    assert r.version == len(story.history) == 5


def test_an_offer_can_be_accepted_at_the_last_moment_of_its_hold(story):
    story.offered().do("accept", "o1", HAD_A, story.at(31))
    assert story.referral.status is Status.ACCEPTED


def test_a_decline_sends_the_referral_back_to_the_matcher(story):
    story.offered().do("decline", "o1", HAD_A, Reason.NO_CAPACITY, "full tonight", story.at(4))
    r = story.referral
    assert r.status is Status.REQUESTED and r.current_offer is None
    assert r.last_decline_reason is Reason.NO_CAPACITY
    assert r.tried_hads == {HAD_A}

    story.offered("o2", HAD_B, minute=5)
    assert story.referral.tried_hads == {HAD_A, HAD_B}
    assert story.referral.first_offer_at == story.at(1)  # the first one, not the latest


def test_an_expired_hold_sends_the_referral_back_to_the_matcher(story):
    [expired] = story.offered().do("expire", "o1", story.at(31))
    assert isinstance(expired, OfferExpired) and expired.had_finess == HAD_A
    assert story.referral.status is Status.REQUESTED and story.referral.tried_hads == {HAD_A}


def test_escalation_then_a_desk_pick_then_an_offer_made_for_the_desk(story):
    [escalated] = story.escalated().history[-1:]
    assert isinstance(escalated, ReferralEscalated)
    assert story.referral.status is Status.ESCALATED

    [pick] = story.do("desk_offer", HAD_C, story.at(20))
    assert isinstance(pick, DeskOfferRequested) and pick.actor == "desk:34"
    assert story.referral.status is Status.ESCALATED  # until the matcher holds a place

    [made] = story.do("record_offer", "o9", HAD_C, story.at(51), "desk pick", True, story.at(21),
                      explanation_json='{"ranked": []}')
    assert isinstance(made, OfferMade) and made.by_desk and made.actor == "desk:34"
    assert made.explanation_json == '{"ranked": []}'
    assert story.referral.status is Status.OFFERED


def test_widening_adds_only_new_departments_and_restarts_the_search(story):
    story.escalated()
    [widened] = story.do("widen", ["30", "34", "12", "30"], story.at(20))
    assert isinstance(widened, SearchWidened) and widened.departments == ("30", "12")
    assert story.referral.departments == ("34", "30", "12")
    assert story.referral.status is Status.REQUESTED


def test_widening_is_allowed_while_the_matcher_is_still_searching(story):
    story.do("widen", ["30"], story.at(1), actor="desk:34/u-12")
    assert story.history[-1].actor == "desk:34/u-12"
    assert story.referral.departments == ("34", "30")


@pytest.mark.parametrize("reach", [None, "offered", "escalated", "accepted"])
def test_any_state_before_admission_can_be_cancelled(story, reach):
    if reach:
        getattr(story, reach)()
    [cancelled] = story.do("cancel", Reason.PATIENT_DECEASED, "", story.at(10), actor="desk:34")
    assert isinstance(cancelled, ReferralCancelled)
    r = story.referral
    assert r.status is Status.CANCELLED and r.closed_reason is Reason.PATIENT_DECEASED
    assert r.current_offer is None and r.clocks() == []  # the hold goes with the referral


# ---- refusals ----------------------------------------------------------------------------


def test_accepting_an_expired_offer_is_refused(story):
    story.offered().refused(ErrorCode.OFFER_EXPIRED, "accept", "o1", HAD_A, story.at(31.5))


def test_declining_an_expired_offer_is_refused(story):
    story.offered().refused(
        ErrorCode.OFFER_EXPIRED, "decline", "o1", HAD_A, Reason.OTHER, "", story.at(40)
    )


@pytest.mark.parametrize("decision", ["accept", "decline"])
def test_an_had_cannot_answer_an_offer_made_to_another(story, decision):
    story.offered()
    args = ("o1", HAD_B) + ((Reason.OTHER, "") if decision == "decline" else ())
    story.refused(ErrorCode.NOT_ADDRESSED_TO_CALLER, decision, *args, story.at(2))


def test_an_had_cannot_answer_another_hads_past_offer_either(story):
    story.offered().do("decline", "o1", HAD_A, Reason.NO_CAPACITY, "", story.at(2))
    story.offered("o2", HAD_B, minute=3)
    story.refused(ErrorCode.NOT_ADDRESSED_TO_CALLER, "accept", "o1", HAD_B, story.at(4))


def test_answering_a_superseded_offer_is_refused(story):
    story.offered().do("expire", "o1", story.at(31))
    story.offered("o2", HAD_B, minute=32)
    story.refused(ErrorCode.OFFER_SUPERSEDED, "accept", "o1", HAD_A, story.at(33))


def test_answering_when_no_offer_is_pending_is_refused(story):
    story.refused(ErrorCode.NO_CURRENT_OFFER, "accept", "o1", HAD_A, story.at(1))
    story.accepted()
    story.refused(ErrorCode.NO_CURRENT_OFFER, "accept", "o1", HAD_A, story.at(6))
    story.refused(
        ErrorCode.NO_CURRENT_OFFER, "decline", "o1", HAD_A, Reason.OTHER, "", story.at(6)
    )


def test_answering_an_offer_of_a_cancelled_referral_is_refused(story):
    story.offered().cancelled()
    story.refused(ErrorCode.ALREADY_CLOSED, "accept", "o1", HAD_A, story.at(3))


def test_admitting_a_cancelled_referral_is_refused(story):
    story.accepted().cancelled()
    story.refused(ErrorCode.ALREADY_CLOSED, "admit", HAD_A, story.at(60))


@pytest.mark.parametrize("reach", [None, "offered", "escalated"])
def test_admitting_before_acceptance_is_refused(story, reach):
    if reach:
        getattr(story, reach)()
    story.refused(ErrorCode.NOT_ACCEPTED, "admit", HAD_A, story.at(60))


def test_only_the_accepting_had_can_admit(story):
    story.accepted().refused(ErrorCode.NOT_ADDRESSED_TO_CALLER, "admit", HAD_B, story.at(60))


def test_admitting_twice_is_refused(story):
    story.admitted().refused(ErrorCode.INVALID_STATE, "admit", HAD_A, story.at(400))


def test_discharge_needs_an_admission_by_the_same_had(story):
    story.refused(ErrorCode.NOT_ADMITTED, "discharge", HAD_A, story.at(60))
    story.accepted().refused(ErrorCode.NOT_ADMITTED, "discharge", HAD_A, story.at(60))
    story.do("admit", HAD_A, story.at(300))
    story.refused(ErrorCode.NOT_ADDRESSED_TO_CALLER, "discharge", HAD_B, story.at(900))
    story.do("discharge", HAD_A, story.at(900))
    story.refused(ErrorCode.ALREADY_CLOSED, "discharge", HAD_A, story.at(901))


@pytest.mark.parametrize(("reach", "code"), [
    ("admitted", ErrorCode.INVALID_STATE),
    ("discharged", ErrorCode.INVALID_STATE),
    ("cancelled", ErrorCode.ALREADY_CLOSED),
])
def test_cancelling_after_admission_or_closure_is_refused(story, reach, code):
    getattr(story, reach)()
    story.refused(code, "cancel", Reason.OTHER, "", story.at(30_000))


def test_cancelling_an_ineligible_referral_is_refused(ineligible):
    ineligible.refused(ErrorCode.ALREADY_CLOSED, "cancel", Reason.OTHER, "", ineligible.at(1))


@pytest.mark.parametrize(("decision", "args"), [
    ("widen", (["30"],)),
    ("desk_offer", (HAD_B,)),
])
@pytest.mark.parametrize(("reach", "code"), [
    ("offered", ErrorCode.OFFER_PENDING),
    ("accepted", ErrorCode.INVALID_STATE),
    ("admitted", ErrorCode.INVALID_STATE),
    ("cancelled", ErrorCode.ALREADY_CLOSED),
    ("discharged", ErrorCode.ALREADY_CLOSED),
])
def test_the_desk_cannot_steer_once_an_offer_is_out_or_the_search_is_over(
    story, decision, args, reach, code
):
    getattr(story, reach)()
    story.refused(code, decision, *args, story.at(30_000))


def test_widening_to_departments_already_searched_is_refused(story):
    story.escalated().refused(ErrorCode.NO_NEW_DEPARTMENT, "widen", ["34"], story.at(5))
    story.refused(ErrorCode.NO_NEW_DEPARTMENT, "widen", [], story.at(5))


# ---- idempotency and late arrivals -------------------------------------------------------


def test_a_redelivered_offer_is_a_no_op(story):
    story.offered()
    version = story.referral.version
    assert story.do("record_offer", "o1", HAD_A, story.at(31), "", False, story.at(2)) == []
    assert story.referral.version == version


def test_an_offer_redelivered_after_its_answer_is_a_no_op(story):
    story.offered().do("decline", "o1", HAD_A, Reason.NO_CAPACITY, "", story.at(2))
    assert story.do("record_offer", "o1", HAD_A, story.at(31), "", False, story.at(3)) == []
    assert story.referral.status is Status.REQUESTED


@pytest.mark.parametrize("reach", ["offered", "accepted", "admitted", "cancelled", "discharged"])
def test_an_offer_that_cannot_be_taken_is_withdrawn_so_its_hold_is_released(story, reach):
    getattr(story, reach)()
    before = copy.deepcopy(story.referral)
    [withdrawn] = story.do("record_offer", "late", HAD_B, story.at(90_000), "", False,
                           story.at(30_000))
    assert isinstance(withdrawn, OfferWithdrawn) and withdrawn.had_finess == HAD_B
    assert story.referral.status is before.status
    assert story.referral.current_offer == before.current_offer
    assert story.referral.tried_hads == before.tried_hads  # it never reached HAD B
    # Redelivered: released once already.
    assert story.do("record_offer", "late", HAD_B, story.at(90_000), "", False,
                    story.at(30_001)) == []


def test_an_offer_for_an_ineligible_referral_is_withdrawn(ineligible):
    [withdrawn] = ineligible.do("record_offer", "o1", HAD_A, ineligible.at(31), "", False,
                                ineligible.at(1))
    assert isinstance(withdrawn, OfferWithdrawn)


def test_stale_hold_timers_are_no_ops(story):
    story.offered()
    assert story.do("expire", "o1", story.at(30)) == []  # fired early: hold still running
    assert story.do("expire", "o0", story.at(31)) == []  # another offer's timer
    story.do("accept", "o1", HAD_A, story.at(5))
    assert story.do("expire", "o1", story.at(31)) == []  # answered in time
    assert story.referral.status is Status.ACCEPTED


def test_a_hold_expires_only_once(story):
    story.offered()
    assert len(story.do("expire", "o1", story.at(31))) == 1
    assert story.do("expire", "o1", story.at(32)) == []


@pytest.mark.parametrize("reach", ["escalated", "offered", "accepted", "admitted", "cancelled"])
def test_a_late_escalation_is_a_no_op(story, reach):
    getattr(story, reach)()
    status = story.referral.status
    assert story.do("escalate", "no HAD left", story.at(30_000)) == []
    assert story.referral.status is status


# ---- clock signals -----------------------------------------------------------------------


def test_an_unanswered_offer_is_signalled_once(story):
    story.offered()
    [signal] = story.do("offer_unanswered", "o1", story.at(16))
    assert isinstance(signal, OfferUnanswered) and signal.had_finess == HAD_A
    assert story.referral.status is Status.OFFERED
    assert story.do("offer_unanswered", "o1", story.at(17)) == []
    # The signal does not stop the HAD from answering within the hold.
    story.do("accept", "o1", HAD_A, story.at(20))
    assert story.referral.status is Status.ACCEPTED


def test_an_answered_offer_is_not_signalled(story):
    story.offered().do("decline", "o1", HAD_A, Reason.OTHER, "", story.at(2))
    assert story.do("offer_unanswered", "o1", story.at(16)) == []


def test_admission_overdue_is_signalled_once_after_24_hours(story):
    assert story.do("admission_overdue", story.at(24 * 60 - 1)) == []
    [signal] = story.do("admission_overdue", story.at(24 * 60))
    assert isinstance(signal, AdmissionOverdue)
    assert story.do("admission_overdue", story.at(24 * 60 + 5)) == []
    story.accepted()  # still admissible afterwards
    assert story.referral.status is Status.ACCEPTED


@pytest.mark.parametrize("reach", ["admitted", "cancelled", "discharged"])
def test_admission_overdue_is_not_signalled_once_admitted_or_closed(story, reach):
    getattr(story, reach)()
    assert story.do("admission_overdue", story.at(30 * 60)) == []


def test_clocks_follow_the_state(story):
    overdue = (ClockKind.ADMISSION_OVERDUE, story.at(24 * 60), None)

    def clocks(**kwargs):
        return [(c.kind, c.due_at, c.offer_id) for c in story.referral.clocks(**kwargs)]

    assert clocks() == [overdue]
    story.offered()
    assert clocks() == [
        (ClockKind.OFFER_UNANSWERED, story.at(16), "o1"),
        (ClockKind.HOLD_EXPIRY, story.at(31), "o1"),
        overdue,
    ]
    assert clocks(unanswered_after=timedelta(minutes=5))[0][1] == story.at(6)
    story.do("offer_unanswered", "o1", story.at(16))
    assert clocks() == [(ClockKind.HOLD_EXPIRY, story.at(31), "o1"), overdue]
    story.do("accept", "o1", HAD_A, story.at(20))
    assert clocks() == [overdue]
    story.do("admit", HAD_A, story.at(300))
    assert clocks() == []


def test_the_overdue_clock_disappears_once_fired(story):
    story.do("admission_overdue", story.at(24 * 60))
    assert story.referral.clocks() == []


# ---- folding -----------------------------------------------------------------------------


def test_replaying_the_history_gives_the_same_state(story):
    story.offered()
    story.do("record_offer", "stray", HAD_C, story.at(40), "", False, story.at(2))  # withdrawn
    story.do("decline", "o1", HAD_A, Reason.CARE_NOT_PROVIDED, "no PCA", story.at(3))
    story.offered("o2", HAD_B, minute=4)
    story.do("record_offer", "stray2", HAD_C, story.at(40), "", False, story.at(4))
    story.do("offer_unanswered", "o2", story.at(19))
    story.do("expire", "o2", story.at(34))
    story.escalated().do("widen", ["30"], story.at(60))
    story.do("escalate", "none in 30 either", story.at(61))
    story.do("desk_offer", HAD_C, story.at(62))
    story.do("record_offer", "o3", HAD_C, story.at(93), "desk", True, story.at(63))
    story.do("accept", "o3", HAD_C, story.at(70))
    story.do("admission_overdue", story.at(24 * 60))
    story.do("admit", HAD_C, story.at(25 * 60))

    assert sum(isinstance(e, OfferWithdrawn) for e in story.history) == 2
    replayed = Referral.from_events(story.history)
    assert replayed == story.referral
    assert replayed.version == len(story.history)
    assert replayed.tried_hads == {HAD_A, HAD_B, HAD_C}
    assert replayed.admitted_had == HAD_C


def test_a_history_must_start_with_the_request(story):
    story.offered()
    with pytest.raises(InconsistentHistory):
        Referral.from_events(story.history[1:])
    with pytest.raises(InconsistentHistory):
        Referral.from_events([])


def test_an_event_that_does_not_fit_the_state_is_a_corrupt_history(story):
    story.offered()
    accepted = story.do("accept", "o1", HAD_A, story.at(2))
    with pytest.raises(InconsistentHistory):
        story.referral.apply(accepted[0])  # applied twice
    with pytest.raises(InconsistentHistory):
        story.referral.apply(story.history[0])  # requested twice


def test_an_event_of_another_referral_is_a_corrupt_history(story, make_request):
    other = Story(make_request(referral_id="another"))
    with pytest.raises(InconsistentHistory):
        story.referral.apply(other.do("escalate", "x", other.at(1))[0])


def test_events_refuse_naive_times(story):
    with pytest.raises(ValueError):
        story.referral.escalate("x", datetime(2025, 3, 10, 15, 0))
