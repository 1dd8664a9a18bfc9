"""The ED exit the referring hospital reports (HL7 A03 through the gateway): recorded once as
EdExitRecorded, without changing the referral's status, and carried by the reflexe.v1 contract."""

from __future__ import annotations

from datetime import timedelta

import pytest
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import unwrap, wrap
from reflexe_common.vocabulary import Reason
from reflexe_referral.adapters import codec
from reflexe_referral.domain import EdExitRecorded, ErrorCode, IllegalTransition, InconsistentHistory, Referral, Status

HOSPITAL = "hospital:340780477"
HAD = "340000181"


def opened(request) -> tuple[Referral, list]:
    history = Referral.request(request, request.requested_at)
    return Referral.from_events(history), history


def do(referral: Referral, history: list, events: list) -> list:
    for event in events:
        referral.apply(event)
    history.extend(events)
    return events


def test_the_exit_is_recorded_with_the_hospitals_time_and_keeps_the_status(make_request):
    request = make_request()
    referral, history = opened(request)
    exited = request.ed_arrival_at + timedelta(hours=6, minutes=7)
    recorded_at = request.requested_at + timedelta(minutes=20)
    [event] = do(referral, history, referral.record_ed_exit(exited, recorded_at, actor=HOSPITAL))
    assert isinstance(event, EdExitRecorded)
    assert (event.exited_at, event.occurred_at, event.actor) == (exited, recorded_at, HOSPITAL)
    assert referral.status is Status.REQUESTED
    assert referral.ed_exited_at == exited
    assert Referral.from_events(history) == referral  # folds back to the same state


def test_a_repeated_exit_records_nothing_more(make_request):
    request = make_request()
    referral, history = opened(request)
    first = request.ed_arrival_at + timedelta(hours=2)
    do(referral, history, referral.record_ed_exit(first, first, actor=HOSPITAL))
    assert referral.record_ed_exit(first + timedelta(hours=1), first + timedelta(hours=1), actor=HOSPITAL) == []
    assert referral.ed_exited_at == first


def test_an_exit_after_the_had_accepted_or_admitted_is_recorded(make_request):
    request = make_request()
    referral, history = opened(request)
    t = request.requested_at
    do(referral, history, referral.record_offer("o1", HAD, t + timedelta(minutes=31), "x", False, t + timedelta(minutes=1)))
    do(referral, history, referral.accept("o1", HAD, t + timedelta(minutes=5)))
    do(referral, history, referral.admit(HAD, t + timedelta(hours=3)))
    [event] = do(referral, history, referral.record_ed_exit(t + timedelta(hours=2), t + timedelta(hours=4), actor=HOSPITAL))
    assert referral.status is Status.ADMITTED and referral.ed_exited_at == event.exited_at


def test_an_exit_before_the_ed_arrival_is_refused(make_request):
    request = make_request()
    referral, _ = opened(request)
    with pytest.raises(IllegalTransition) as refusal:
        referral.record_ed_exit(request.ed_arrival_at - timedelta(minutes=1), request.requested_at, actor=HOSPITAL)
    assert refusal.value.code == ErrorCode.INVALID_STATE
    assert referral.ed_exited_at is None


def test_without_a_known_arrival_any_exit_time_is_taken(make_request):
    request = make_request(ed_arrival_at=None)
    referral, history = opened(request)
    exited = request.requested_at - timedelta(days=1)
    assert do(referral, history, referral.record_ed_exit(exited, request.requested_at, actor=HOSPITAL))


def test_a_closed_referral_takes_no_exit(make_request):
    request = make_request()
    referral, history = opened(request)
    do(referral, history, referral.cancel(Reason.PATIENT_HOSPITALISED, "", request.requested_at, actor=HOSPITAL))
    with pytest.raises(IllegalTransition) as refusal:
        referral.record_ed_exit(request.requested_at, request.requested_at, actor=HOSPITAL)
    assert refusal.value.code == ErrorCode.ALREADY_CLOSED


def test_a_second_exit_in_a_history_is_an_inconsistent_history(make_request):
    request = make_request()
    referral, history = opened(request)
    [event] = do(referral, history, referral.record_ed_exit(request.requested_at, request.requested_at, actor=HOSPITAL))
    with pytest.raises(InconsistentHistory):
        Referral.from_events([*history, event])


def test_the_event_travels_as_reflexe_v1_EdExitRecorded_and_back(make_request):
    request = make_request()
    referral, _ = opened(request)
    [event] = referral.record_ed_exit(request.ed_arrival_at + timedelta(hours=5, microseconds=250),
                                      request.requested_at, actor=HOSPITAL)
    message = codec.to_proto(event, referral.department)
    assert isinstance(message, pb.EdExitRecorded)
    assert message.header.department == referral.department
    envelope = wrap(message, "reflexe/referral")
    decoded = unwrap(envelope.headers(), envelope.value())
    assert decoded.type == "reflexe.v1.EdExitRecorded"
    assert codec.from_proto(decoded.message) == event
