"""The matcher's commands through a unit of work, driven with the in-memory fake: the same
service-layer functions the Kafka and REST doors call, without PostgreSQL or Kafka."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

from reflexe.v1 import referral_pb2

from reflexe_capacity.domain.capacity import CapacityDeclaration, HoldState
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy, offer_id_for
from reflexe_common.envelope import ts, wrap
from reflexe_common.vocabulary import CapacityStatus, Equipment
from tests.unit.capacity.fakes import FakeUnitOfWork

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
COMMUNE = "34172"
FIRST, SECOND = "340000017", "340000025"


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def had(finess: str) -> HadEstablishment:
    return HadEstablishment(finess, f"HAD {finess}", frozenset({"34"}), frozenset(), frozenset({"03"}),
                            frozenset({Equipment.OXYGEN}), frozenset({COMMUNE}), authorised_places=10)


def header(referral_id: str, minute: int) -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id=referral_id, department="34", occurred_at=ts(at(minute)),
                                            actor="test")


def requested(referral_id: str, minute: int) -> referral_pb2.ReferralRequested:
    return referral_pb2.ReferralRequested(header=header(referral_id, minute), request=referral_pb2.ReferralRequest(
        referral_id=referral_id, department="34", source=referral_pb2.Source(kind="ED", finess="340780477"),
        patient=referral_pb2.Patient(pseudonym="p-test", birth_year=1940, sex="F", care_commune=COMMUNE,
                                     place_of_care="HOME"),
        clinical=referral_pb2.Clinical(main_mpp="03", karnofsky=50, urgency="WITHIN_24H", expected_duration_days=10),
        conditions=referral_pb2.Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True),
        requested_at=ts(at(minute))))


async def declared(uow: FakeUnitOfWork, matcher: Matcher, finess: str, places: int, minute: int = 0) -> None:
    assert await matcher.declare(uow, CapacityDeclaration(finess, places, places, CapacityStatus.OPEN, at(minute)), "test")


async def test_a_referral_gets_an_offer_and_its_hold_and_the_hads_live_places():
    uow, matcher = FakeUnitOfWork(), Matcher(MatcherPolicy())
    uow.register(had(FIRST))
    await declared(uow, matcher, FIRST, 2)
    referral = str(uuid.uuid4())
    await matcher.handle(uow, wrap(requested(referral, 1), "test"))
    [offer] = uow.published("OfferProposed")
    assert (offer.referral_id, offer.had_finess, offer.offer_id) == (referral, FIRST, offer_id_for(referral, 1))
    assert uow.holds[offer.hold_id].state is HoldState.ACTIVE
    assert uow.published("LivePlacesChanged")[-1].live_places == 1
    assert uow.ledgers[FIRST].holding == 1


async def test_a_decline_releases_the_place_and_the_next_had_is_offered():
    uow, matcher = FakeUnitOfWork(), Matcher(MatcherPolicy())
    for finess in (FIRST, SECOND):
        uow.register(had(finess))
        await declared(uow, matcher, finess, 1)
    referral = str(uuid.uuid4())
    await matcher.handle(uow, wrap(requested(referral, 1), "test"))
    [first] = uow.published("OfferProposed")
    await matcher.handle(uow, wrap(referral_pb2.OfferDeclined(header=header(referral, 2), offer_id=first.offer_id),
                                   "test"))
    offers = uow.published("OfferProposed")
    assert [o.had_finess for o in offers] == [first.had_finess, ({FIRST, SECOND} - {first.had_finess}).pop()]
    assert uow.holds[first.hold_id].state is HoldState.RELEASED
    assert uow.ledgers[first.had_finess].holding == 0


async def test_a_redelivered_request_holds_no_second_place():
    uow, matcher = FakeUnitOfWork(), Matcher(MatcherPolicy())
    uow.register(had(FIRST))
    await declared(uow, matcher, FIRST, 5)
    referral = str(uuid.uuid4())
    for _ in range(2):
        await matcher.handle(uow, wrap(requested(referral, 1), "test"))
    assert len(uow.published("OfferProposed")) == 1 and uow.ledgers[FIRST].holding == 1


async def test_a_ledger_changed_elsewhere_is_read_again_and_decided_on_again():
    """Another process took the HAD's last place between the read and the write: the write is
    refused, the ledger read again, and the matcher escalates instead of double booking."""
    uow, matcher = FakeUnitOfWork(), Matcher(MatcherPolicy())
    uow.register(had(FIRST))
    await declared(uow, matcher, FIRST, 1)
    full = dataclasses.replace(uow.ledgers[FIRST], holding=1, promised=1, version=uow.ledgers[FIRST].version + 1)
    uow.changed_elsewhere[FIRST] = [full]
    referral = str(uuid.uuid4())
    await matcher.handle(uow, wrap(requested(referral, 1), "test"))
    assert uow.lost_writes == 1
    assert uow.published("OfferProposed") == []
    [exhausted] = uow.published("MatchExhausted")
    assert exhausted.referral_id == referral and "aucune place libre" in exhausted.explanation
    assert uow.ledgers[FIRST].holding == 1  # the other process's hold only


async def test_a_declaration_is_the_same_command_whatever_the_door():
    uow, matcher = FakeUnitOfWork(), Matcher(MatcherPolicy())
    uow.register(had(FIRST))
    await declared(uow, matcher, FIRST, 3, minute=5)
    # An older declaration arriving late is kept in the history but changes nothing.
    assert await matcher.declare(uow, CapacityDeclaration(FIRST, 9, 9, CapacityStatus.OPEN, at(1)), "kafka")
    assert uow.ledgers[FIRST].declaration.places_available == 3
    assert [c for _, c in uow.declarations] == ["test", "kafka"]
    assert [e.places_available for e in uow.published("CapacityDeclared")] == [3]
