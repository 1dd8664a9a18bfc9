"""The referral service's commands, driven with an in-memory unit of work: the one submit path of
the REST, FHIR and Kafka doors (ownership, commune -> department, domain rules, idempotency by
fingerprint, conflicting duplicates), the decision runner with its audit, and the Kafka doors'
translation of the commands' refusals into dead-lettered records."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pytest
from reflexe.v1 import matching_pb2, submission_pb2

from reflexe_common.envelope import PoisonRecord, ts, wrap
from reflexe_referral.adapters.codec import request_to_proto
from reflexe_referral.domain.errors import IllegalTransition, InvalidRequest
from reflexe_referral.domain.events import OfferMade, ReferralRequested
from reflexe_referral.entrypoints.consumers import matching_handler, submission_handler
from reflexe_referral.service_layer.handlers import (ConflictingDuplicate, NotTheSource, SubmitReferral, UnknownCommune,
                                                     UnknownReferral, act_on_referral, submit_referral)
from tests.support.referral_unit_of_work import AuditRecord, FakeUnitOfWork

NOW_OFFSET = timedelta(minutes=3)
NIMES = "30189"  # a commune of the Gard (30)
UNANSWERED_AFTER = timedelta(minutes=30)


def _command(request, stamped_by_client: bool = True, submitted_by: str | None = "source") -> SubmitReferral:
    return SubmitReferral(request, stamped_by_client,
                          submitted_by=request.source.finess if submitted_by == "source" else submitted_by)


async def test_a_new_referral_opens_in_the_department_of_its_care_commune(make_request):
    uow = FakeUnitOfWork()
    # Whatever department the door put in, the command takes the care commune's.
    request = make_request(department="", patient__care_commune=NIMES)
    submitted = await submit_referral(uow, _command(request), request.requested_at + NOW_OFFSET)
    assert submitted.created
    assert submitted.referral.department == "30"
    assert uow.commits == 1
    [requested] = uow.events(request.referral_id)
    assert isinstance(requested, ReferralRequested)
    assert requested.request.department == "30"
    assert requested.occurred_at == request.requested_at + NOW_OFFSET
    assert uow.serialised == [request.referral_id]  # concurrent retries of one id run one at a time


async def test_the_same_body_again_answers_with_the_referral_already_opened(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    first = await submit_referral(uow, _command(request), request.requested_at)
    again = await submit_referral(uow, _command(request), request.requested_at + NOW_OFFSET)
    assert not again.created
    assert again.referral.referral_id == first.referral.referral_id
    assert again.referral.version == first.referral.version
    assert len(uow.events(request.referral_id)) == 1


async def test_a_retry_stamped_by_the_server_is_the_same_body_whatever_the_time_of_each_attempt(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    await submit_referral(uow, _command(request, stamped_by_client=False), request.requested_at)
    retried = replace(request, requested_at=request.requested_at + NOW_OFFSET)
    again = await submit_referral(uow, _command(retried, stamped_by_client=False), retried.requested_at)
    assert not again.created
    # The same shift stamped by the client is another body.
    with pytest.raises(ConflictingDuplicate):
        await submit_referral(uow, _command(retried, stamped_by_client=True), retried.requested_at)


async def test_another_body_under_the_same_id_is_a_conflicting_duplicate_and_changes_nothing(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    await submit_referral(uow, _command(request), request.requested_at)
    with pytest.raises(ConflictingDuplicate):
        await submit_referral(uow, _command(make_request(clinical__karnofsky=30)), request.requested_at)
    assert uow.rollbacks == 1
    [kept] = uow.events(request.referral_id)
    assert kept.request.clinical.karnofsky == request.clinical.karnofsky


async def test_an_unknown_care_commune_is_refused_naming_the_field(make_request):
    uow = FakeUnitOfWork()
    request = make_request(patient__care_commune="99999")
    with pytest.raises(UnknownCommune) as refused:
        await submit_referral(uow, _command(request), request.requested_at)
    assert refused.value.field == "patient.care_commune"
    assert refused.value.insee_code == "99999"
    assert uow.commits == 0 and uow.events(request.referral_id) == []


async def test_a_request_breaking_domain_rules_is_refused_with_each_field(make_request):
    uow = FakeUnitOfWork()
    request = make_request(patient__birth_year=1850, clinical__karnofsky=5)
    with pytest.raises(InvalidRequest) as refused:
        await submit_referral(uow, _command(request), request.requested_at)
    fields = [path for path, _ in refused.value.problems]
    assert "patient.birth_year" in fields and "clinical.karnofsky" in fields
    assert uow.commits == 0 and uow.events(request.referral_id) == []


async def test_an_establishment_submits_only_as_itself_an_admin_for_any(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    with pytest.raises(NotTheSource):
        await submit_referral(uow, _command(request, submitted_by="340000000"), request.requested_at)
    assert uow.events(request.referral_id) == []
    admin = await submit_referral(uow, _command(request, submitted_by=None), request.requested_at)
    assert admin.created


async def test_a_decision_refused_by_the_domain_is_rolled_back_and_audited_as_refused(make_request):
    uow = FakeUnitOfWork()
    request = make_request()
    await submit_referral(uow, _command(request), request.requested_at)
    with pytest.raises(IllegalTransition) as refused:
        await act_on_referral(uow, request.referral_id,
                              lambda r: r.accept("no-such-offer", "340000000", request.requested_at),
                              actor="had:340000000", action="had.accept", subject="someone")
    assert uow.committed.audits == [AuditRecord("had.accept", request.referral_id, refused.value.code)]
    assert len(uow.events(request.referral_id)) == 1


async def test_a_decision_on_an_unknown_referral_is_refused(make_request):
    with pytest.raises(UnknownReferral):
        await act_on_referral(FakeUnitOfWork(), make_request().referral_id, lambda r: [])


def _published(request, submitted_by: str | None = None, stamped_by_client: bool = True):
    message = submission_pb2.SubmitReferral(request=request_to_proto(request),
                                            submitted_by=request.source.finess if submitted_by is None else submitted_by)
    if not stamped_by_client:
        message.request.ClearField("requested_at")
    return wrap(message, "test/hospital", time=request.requested_at + NOW_OFFSET)


async def test_the_kafka_door_runs_the_same_command_and_dead_letters_what_it_refuses(make_request):
    uow = FakeUnitOfWork()
    handle = submission_handler(UNANSWERED_AFTER, unit_of_work=lambda _conn: uow)
    request = make_request(department="", patient__care_commune=NIMES)
    await handle(None, _published(request))
    [requested] = uow.events(request.referral_id)
    assert requested.request.department == "30"
    await handle(None, _published(request))  # the same body again: nothing new
    assert len(uow.events(request.referral_id)) == 1
    refusals = {
        "with a different body": _published(replace(request, clinical=replace(request.clinical, karnofsky=30))),
        "patient.care_commune": _published(make_request(referral_id="1d0e4a52-1f7b-4c8e-9a51-6b2d3c4e5f60",
                                                        patient__care_commune="99999")),
        "patient.birth_year": _published(make_request(referral_id="2d0e4a52-1f7b-4c8e-9a51-6b2d3c4e5f60",
                                                      patient__birth_year=1850)),
        "submitted_by does not match": _published(make_request(referral_id="3d0e4a52-1f7b-4c8e-9a51-6b2d3c4e5f60"),
                                                  submitted_by="340000000"),
    }
    for reason, envelope in refusals.items():
        with pytest.raises(PoisonRecord, match=reason):
            await handle(None, envelope)
    assert set(uow.committed.referrals) == {request.referral_id}


async def test_the_kafka_door_stamps_a_request_without_time_with_the_records_time(make_request):
    uow = FakeUnitOfWork()
    handle = submission_handler(UNANSWERED_AFTER, unit_of_work=lambda _conn: uow)
    request = make_request()
    envelope = _published(request, stamped_by_client=False)
    await handle(None, envelope)
    [requested] = uow.events(request.referral_id)
    assert requested.request.requested_at == envelope.time
    later = _published(request, stamped_by_client=False)  # a retry, published later
    await handle(None, later)
    assert len(uow.events(request.referral_id)) == 1


@dataclass
class Submitted:
    """A referral submitted, and the matcher's door (its Kafka handler) onto the same unit of work."""

    uow: FakeUnitOfWork
    handle: Any
    request: Any
    at: datetime  # when the matcher answers


@pytest.fixture
async def submitted(make_request) -> Submitted:
    uow = FakeUnitOfWork()
    request = make_request()
    await submit_referral(uow, _command(request), request.requested_at)
    return Submitted(uow, matching_handler(UNANSWERED_AFTER, unit_of_work=lambda _conn: uow), request,
                     request.requested_at + NOW_OFFSET)


async def test_the_matcher_door_records_the_offer_through_the_decision_runner(submitted):
    uow, handle, request, at = submitted.uow, submitted.handle, submitted.request, submitted.at
    offer = matching_pb2.OfferProposed(referral_id=request.referral_id, department="34", occurred_at=ts(at),
                                       offer_id="o1", had_finess="340000000", hold_until=ts(at + timedelta(hours=1)),
                                       explanation="covers 34172")
    await handle(None, wrap(offer, "reflexe/capacity"))
    made = uow.events(request.referral_id)[-1]
    assert isinstance(made, OfferMade) and made.offer_id == "o1" and made.had_finess == "340000000"
    unknown = matching_pb2.OfferProposed(referral_id="4d0e4a52-1f7b-4c8e-9a51-6b2d3c4e5f60", department="34",
                                         occurred_at=ts(at), offer_id="o2", had_finess="340000000",
                                         hold_until=ts(at + timedelta(hours=1)))
    with pytest.raises(PoisonRecord, match="unknown referral"):
        await handle(None, wrap(unknown, "reflexe/capacity"))


async def test_a_desk_pick_that_failed_leaves_the_search_as_it_is(submitted):
    """The matcher's answer to a desk's pick it could not place (by_desk) may reach the referral
    service after the desk has widened the search: it must not escalate the widened referral (its
    desk would be told of one failed pick twice: by notify from this event, then by the escalation)."""
    uow, handle, request, at = submitted.uow, submitted.handle, submitted.request, submitted.at
    exhausted = matching_pb2.MatchExhausted(referral_id=request.referral_id, department="34", occurred_at=ts(at),
                                            explanation="Aucune HAD disponible")
    await handle(None, wrap(exhausted, "reflexe/capacity"))
    escalated = await act_on_referral(uow, request.referral_id, lambda r: [])
    assert escalated.status == "ESCALATED"
    # The desk picks an HAD (the matcher finds it full), then widens the search before that answer arrives.
    await act_on_referral(uow, request.referral_id, lambda r: r.desk_offer("340000000", at + timedelta(minutes=1)))
    widened = await act_on_referral(uow, request.referral_id, lambda r: r.widen(["30"], at + timedelta(minutes=2)))
    assert widened.status == "REQUESTED"
    events = len(uow.events(request.referral_id))
    pick_failed = matching_pb2.MatchExhausted(referral_id=request.referral_id, department="34",
                                              occurred_at=ts(at + timedelta(minutes=1)),
                                              explanation="Aucune HAD disponible : HAD choisie sans place", by_desk=True)
    await handle(None, wrap(pick_failed, "reflexe/capacity"))
    assert len(uow.events(request.referral_id)) == events
    assert (await act_on_referral(uow, request.referral_id, lambda r: [])).status == "REQUESTED"
    # The matcher's own search of the widened departments still escalates it when it finds nothing.
    await handle(None, wrap(matching_pb2.MatchExhausted(referral_id=request.referral_id, department="34",
                                                        occurred_at=ts(at + timedelta(minutes=2)),
                                                        explanation="Aucune HAD disponible"), "reflexe/capacity"))
    assert (await act_on_referral(uow, request.referral_id, lambda r: [])).status == "ESCALATED"
