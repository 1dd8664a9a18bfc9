"""Planned referrals' clocks: the "not admitted" alarm counts from the planned date (the end of
the planned day on the department's clock), not from the request; a referral within 24 h keeps
its 24-hour target."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from reflexe_common.vocabulary import Urgency
from reflexe_referral.adapters.codec import from_proto, to_proto
from reflexe_referral.domain import (
    AdmissionOverdue,
    ClockKind,
    InvalidRequest,
    Referral,
    ReferralRequested,
    admission_due_at,
    end_of_planned_day,
)

HAD = "340000017"


def planned(make_request, planned_date: date, department: str = "34", **overrides):
    return make_request(clinical__urgency=Urgency.PLANNED, clinical__planned_date=planned_date,
                        department=department, **overrides)


def opened(request) -> Referral:
    return Referral.from_events(Referral.request(request, request.requested_at))


def overdue_clock(referral: Referral) -> datetime:
    [clock] = [c for c in referral.clocks() if c.kind == ClockKind.ADMISSION_OVERDUE]
    return clock.due_at


def test_the_end_of_the_planned_day_is_local_midnight_of_the_department() -> None:
    # Summer time in Paris (UTC+2), winter time (UTC+1); Martinique UTC-4, Réunion UTC+4 all year.
    assert end_of_planned_day(date(2025, 7, 14), "34") == datetime(2025, 7, 14, 22, 0, tzinfo=UTC)
    assert end_of_planned_day(date(2025, 1, 14), "2A") == datetime(2025, 1, 14, 23, 0, tzinfo=UTC)
    assert end_of_planned_day(date(2025, 3, 29), "34") == datetime(2025, 3, 29, 23, 0, tzinfo=UTC)  # the day before DST
    assert end_of_planned_day(date(2025, 3, 30), "34") == datetime(2025, 3, 30, 22, 0, tzinfo=UTC)  # a 23-hour day
    assert end_of_planned_day(date(2025, 7, 14), "972") == datetime(2025, 7, 15, 4, 0, tzinfo=UTC)
    assert end_of_planned_day(date(2025, 7, 14), "974") == datetime(2025, 7, 14, 20, 0, tzinfo=UTC)


def test_a_planned_referral_is_overdue_at_the_end_of_its_planned_day_not_24_hours_after_the_request(make_request):
    request = planned(make_request, date(2025, 3, 14))  # requested on 10 March at 14:00 UTC
    referral = opened(request)
    due = datetime(2025, 3, 14, 23, 0, tzinfo=UTC)  # midnight in Montpellier
    assert overdue_clock(referral) == due == admission_due_at(request)
    assert referral.admission_overdue(request.requested_at + timedelta(hours=25)) == []
    assert referral.admission_overdue(due - timedelta(seconds=1)) == []  # admitted on the day is on time
    [signal] = referral.admission_overdue(due)
    assert isinstance(signal, AdmissionOverdue)
    assert signal.due_at == due and signal.planned_date == date(2025, 3, 14)
    referral.apply(signal)
    assert referral.clocks() == [] and referral.admission_overdue(due + timedelta(days=1)) == []


def test_before_the_planned_date_the_search_goes_on_and_an_early_admission_is_no_problem(make_request):
    request = planned(make_request, date(2025, 3, 20))
    referral = opened(request)
    t = request.requested_at
    for event in referral.record_offer("o1", HAD, t + timedelta(hours=4), "covers 34172", False, t + timedelta(minutes=1)):
        referral.apply(event)
    kinds = [c.kind for c in referral.clocks()]
    assert kinds == [ClockKind.OFFER_UNANSWERED, ClockKind.HOLD_EXPIRY, ClockKind.ADMISSION_OVERDUE]
    for decision, args in (("accept", ("o1", HAD, t + timedelta(minutes=10))), ("admit", (HAD, t + timedelta(days=2)))):
        for event in getattr(referral, decision)(*args):
            referral.apply(event)
    assert referral.clocks() == []


def test_an_overseas_planned_referral_ends_on_its_own_clock(make_request):
    request = planned(make_request, date(2025, 3, 14), department="972")
    assert overdue_clock(opened(request)) == datetime(2025, 3, 15, 4, 0, tzinfo=UTC)


def test_a_planned_date_already_past_at_the_request_is_overdue_at_once(make_request):
    request = planned(make_request, date(2025, 3, 9))  # the day before the request
    referral = opened(request)
    assert overdue_clock(referral) < request.requested_at
    assert [type(e) for e in referral.admission_overdue(request.requested_at)] == [AdmissionOverdue]


def test_a_referral_within_24_hours_keeps_its_24_hour_target_even_with_a_date(make_request):
    request = make_request(clinical__planned_date=date(2025, 3, 30))  # a date alone does not make it planned
    referral = opened(request)
    due = request.requested_at + timedelta(hours=24)
    assert overdue_clock(referral) == due
    [signal] = referral.admission_overdue(due)
    assert signal.due_at == due and signal.planned_date is None


def test_a_planned_referral_without_a_date_is_refused_at_the_door_and_held_to_24_hours_if_found(make_request):
    undated = make_request(clinical__urgency=Urgency.PLANNED)
    with pytest.raises(InvalidRequest) as refused:
        Referral.request(undated, undated.requested_at)
    assert ("clinical.planned_date", "required for a planned admission") in refused.value.problems
    # An older history may hold one (accepted before the rule): the 24-hour alarm still applies.
    found = Referral.from_events([ReferralRequested(referral_id=undated.referral_id, occurred_at=undated.requested_at,
                                                    actor="hospital:340780477", request=undated)])
    assert overdue_clock(found) == undated.requested_at + timedelta(hours=24)


@pytest.mark.parametrize("planned_date", [date(2025, 3, 14), None])
def test_the_overdue_signal_keeps_its_deadline_through_the_event_log(make_request, planned_date):
    request = planned(make_request, planned_date) if planned_date else make_request()
    referral = opened(request)
    [signal] = referral.admission_overdue(datetime(2025, 4, 1, tzinfo=UTC))
    message = to_proto(signal, request.department)
    assert from_proto(message) == signal
    assert message.planned_date == (planned_date.isoformat() if planned_date else "")
    # An event written before the deadline was carried reads back without one.
    message.ClearField("due_at")
    message.planned_date = ""
    old = from_proto(message)
    assert old.due_at is None and old.planned_date is None
