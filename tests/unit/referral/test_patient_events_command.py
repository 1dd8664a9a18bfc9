"""The gateway's patient events, driven with an in-memory unit of work: the referral is the open
one of that patient from that sender, the effect is the domain's decision, and each report is
answered once by its message key (a retry gets the first outcome, nothing new)."""

from __future__ import annotations

from datetime import timedelta

from reflexe_referral.domain.events import ReferralCancelled
from reflexe_referral.domain.model import Status
from reflexe_referral.service_layer.handlers import SubmitReferral, act_on_referral, submit_referral
from reflexe_referral.service_layer.patient_events import PatientEvent, apply_patient_event
from tests.support.referral_unit_of_work import AuditRecord, FakeUnitOfWork

LATER = timedelta(hours=2)
HAD = "340000000"


async def _opened(uow: FakeUnitOfWork, request) -> None:
    await submit_referral(uow, SubmitReferral(request, True, request.source.finess), request.requested_at)


def _reported(request, effect: str, key: str = "340780477/MSG1", sender: str | None = None) -> PatientEvent:
    return PatientEvent(message_key=key, sender_finess=sender or request.source.finess, effect=effect,
                        pseudonym=request.patient.pseudonym, referral_id=None,
                        occurred_at=request.requested_at + LATER)


async def test_a_hospitalisation_cancels_the_patients_open_referral_once_whatever_the_retries(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    await _opened(uow, request)
    reported = _reported(request, "HOSPITALISED")
    first = await apply_patient_event(uow, reported, request.requested_at + LATER)
    assert first == {"outcome": "APPLIED", "referral_id": request.referral_id, "code": None}
    cancelled = uow.events(request.referral_id)[-1]
    assert isinstance(cancelled, ReferralCancelled)
    assert uow.committed.audits[-1] == AuditRecord("gateway.hospitalised", request.referral_id, None)
    again = await apply_patient_event(uow, reported, request.requested_at + 2 * LATER)
    assert again == first
    assert len(uow.events(request.referral_id)) == 2
    assert uow.serialised[-2:] == [reported.message_key, reported.message_key]


async def test_a_report_from_another_hospital_matches_nothing_and_is_remembered(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    await _opened(uow, request)
    reported = _reported(request, "DECEASED", sender="340000000")
    outcome = await apply_patient_event(uow, reported, request.requested_at + LATER)
    assert outcome == {"outcome": "UNMATCHED", "referral_id": None, "code": None}
    assert uow.committed.patient_event_outcomes[reported.message_key] == outcome
    assert len(uow.events(request.referral_id)) == 1


async def test_a_report_the_domain_refuses_is_answered_refused_with_its_code(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    await _opened(uow, request)
    at = request.requested_at + timedelta(minutes=5)
    await act_on_referral(uow, request.referral_id, lambda r: r.record_offer("o1", HAD, at + LATER, "", False, at))
    await act_on_referral(uow, request.referral_id, lambda r: r.accept("o1", HAD, at))
    # The HAD that accepted reports a discharge before any admission.
    discharged = PatientEvent(message_key=f"{HAD}/MSG3", sender_finess=HAD, effect="HAD_DISCHARGED",
                              pseudonym=request.patient.pseudonym, referral_id=request.referral_id,
                              occurred_at=at + LATER)
    outcome = await apply_patient_event(uow, discharged, at + LATER)
    assert outcome == {"outcome": "REFUSED", "referral_id": request.referral_id, "code": "NOT_ADMITTED"}
    referral = await uow.referrals.load(request.referral_id)
    assert referral is not None and referral.status is Status.ACCEPTED
    assert uow.committed.patient_event_outcomes[discharged.message_key] == outcome
