"""Live places once a promised patient is admitted after the HAD re-declared its capacity.

docs/domain.md: live places = declared places − active holds − admissions since the declaration.
An HAD declares 2 places; a referral is offered and accepted (a CONFIRMED hold); the HAD then
declares 1 place (the accepted patient is grandfathered: the platform did nothing wrong); the
patient is admitted, after that declaration. Live places: 1 − 0 active − 1 admission since the
declaration = 0, so the next referral must not be offered to that HAD. The matcher must agree with
the LivePlacesChanged it published and with the desk's capacity board.

Runs the Matcher directly on a fresh PostgreSQL schema, each input in its own transaction.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from reflexe.v1 import referral_pb2

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.domain.capacity import CapacityDeclaration
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy, offer_id_for
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_common.envelope import message_class, ts, wrap
from reflexe_common.vocabulary import CapacityStatus, Equipment
from tests.support.data import pseudonym

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HAD = "340000017"
COMMUNE = "34172"  # a schema of its own: nothing else competes


def at(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def header(referral_id: str, m: int) -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id=referral_id, department="34", occurred_at=ts(at(m)), actor="test")


def requested(referral_id: str, m: int) -> referral_pb2.ReferralRequested:
    return referral_pb2.ReferralRequested(header=header(referral_id, m), request=referral_pb2.ReferralRequest(
        referral_id=referral_id, department="34", source=referral_pb2.Source(kind="ED", finess="340780477"),
        patient=referral_pb2.Patient(pseudonym=pseudonym("p-0001"), birth_year=1940, sex="F", care_commune=COMMUNE, place_of_care="HOME"),
        clinical=referral_pb2.Clinical(main_mpp="03", karnofsky=50, urgency="WITHIN_24H", expected_duration_days=10),
        conditions=referral_pb2.Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True),
        requested_at=ts(at(m))))


async def test_an_admission_after_a_redeclaration_still_takes_its_place(capacity_pool):
    matcher = Matcher(MatcherPolicy())
    first, second = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    offer = offer_id_for(first, 1)
    steps = [
        lambda conn: CapacityStore(conn).upsert_had(HadEstablishment(
            HAD, "HAD Test", frozenset({"34"}), frozenset(), frozenset({"03"}), frozenset({Equipment.OXYGEN}),
            frozenset({COMMUNE}), authorised_places=10)),
        lambda conn: matcher.declare(PostgresUnitOfWork(conn), CapacityDeclaration(HAD, 2, 2, CapacityStatus.OPEN, at(0)), "test"),
        lambda conn: matcher.handle(PostgresUnitOfWork(conn), wrap(requested(first, 1), "test")),
        lambda conn: matcher.handle(PostgresUnitOfWork(conn), wrap(referral_pb2.OfferAccepted(header=header(first, 2), offer_id=offer,
                                                                          had_finess=HAD), "test")),
        lambda conn: matcher.declare(PostgresUnitOfWork(conn), CapacityDeclaration(HAD, 1, 1, CapacityStatus.OPEN, at(3)), "test"),
        lambda conn: matcher.handle(PostgresUnitOfWork(conn), wrap(referral_pb2.PatientAdmitted(header=header(first, 4), had_finess=HAD,
                                                                            place_of_care="HOME"), "test")),
        lambda conn: matcher.handle(PostgresUnitOfWork(conn), wrap(requested(second, 5), "test")),
    ]
    for step in steps:
        async with capacity_pool.acquire() as conn, conn.transaction():
            await step(conn)

    async with capacity_pool.acquire() as conn:
        published = [(dict(json.loads(r["headers"]))["ce_type"], r["payload"])
                     for r in await conn.fetch("SELECT headers, payload FROM outbox ORDER BY id")]
        board = dict((had.finess, ledger) for had, ledger in await CapacityStore(conn).board("34"))
    live = [message_class(t).FromString(p) for t, p in published if t == "reflexe.v1.LivePlacesChanged"]
    decisions = [message_class(t).FromString(p) for t, p in published
                 if t in ("reflexe.v1.OfferProposed", "reflexe.v1.MatchExhausted")]
    assert [type(d).__name__ for d in decisions] == ["OfferProposed", "MatchExhausted"], [d.explanation for d in decisions]
    assert decisions[1].referral_id == second and "aucune place libre" in decisions[1].explanation
    assert live[-1].live_places == 0  # what the matcher published after the admission
    assert board[HAD].live_places() == 0  # what the desk's board shows
