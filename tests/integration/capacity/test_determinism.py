"""Matching rule 5: replaying the same events in the same order gives the same decisions.

The same inputs (registry, declarations, referral events with their own times) are fed to the
Matcher, each in its own transaction as the idempotent consumer would, on fresh PostgreSQL
schemas; the offers it wrote to its outbox (ids, HADs, holds, explanations) and its holds must be
identical. Two independent declarations arriving in the other order change nothing; a referral
processed before rather than after a declaration changes the decisions, which shows the
comparison can fail.

The script answers offers as HADs would (decline, accept, expiry, admission, cancellation), so
that the response-time ranking, cascades, escalation and a desk pick are part of what is compared.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from google.protobuf import json_format
from reflexe.v1 import referral_pb2

from reflexe_capacity.adapters.owned_ledgers import OwnedLedgers
from reflexe_capacity.domain.capacity import CapacityDeclaration
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_common.db import create_pool, migrate
from reflexe_common.envelope import dt, message_class, ts, wrap
from reflexe_common.partitioning import department_partition
from reflexe_common.topics import MATCHING_EVENTS, REFERRAL_EVENTS
from reflexe_common.vocabulary import CapacityStatus, Equipment
from tests.support.data import pseudonym

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PARTITION = department_partition("34")
COMMUNE = "34172"  # each run has a schema of its own: no other test can interfere
EHPAD = "340123454"
H1, H2, H3 = "340000017", "340000025", "340000033"
R = [str(uuid.UUID(int=0xD0_0000 + n)) for n in range(9)]  # fixed referral ids


def minutes(m: float) -> datetime:
    return T0 + timedelta(minutes=m)


def had(finess: str, size: int, conventions: frozenset[str] = frozenset()) -> HadEstablishment:
    return HadEstablishment(finess=finess, name=f"HAD {finess[-1]}", departments=frozenset({"34"}), mentions=frozenset(),
                            mpp_supported=frozenset({"03", "09", "14"}),
                            equipment=frozenset({Equipment.SYRINGE_DRIVER, Equipment.OXYGEN}),
                            zone_communes=frozenset({COMMUNE}), ehpad_conventions=conventions, authorised_places=size)


def declaration(finess: str, places: int, at: datetime) -> CapacityDeclaration:
    return CapacityDeclaration(finess, places, places, CapacityStatus.OPEN, at)


def header(referral_id: str, at: datetime, actor: str = "system") -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id=referral_id, department="34", occurred_at=ts(at), actor=actor)


def requested(referral_id: str, at: datetime, ehpad: bool = False) -> referral_pb2.ReferralRequested:
    request = referral_pb2.ReferralRequest(
        referral_id=referral_id, department="34",
        source=referral_pb2.Source(kind="ED", finess="340780477", unit="SAU"),
        patient=referral_pb2.Patient(pseudonym=pseudonym(referral_id), birth_year=1940, sex="F", care_commune=COMMUNE,
                                     place_of_care="EHPAD" if ehpad else "HOME", ehpad_finess=EHPAD if ehpad else ""),
        clinical=referral_pb2.Clinical(main_mpp="03", associated_mpp=["09"], karnofsky=50, equipment=["SYRINGE_DRIVER"],
                                       urgency="WITHIN_24H", expected_duration_days=10),
        conditions=referral_pb2.Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True),
        requested_at=ts(at))
    return referral_pb2.ReferralRequested(header=header(referral_id, at, "hospital:340780477"), request=request)


# A step acts on one schema in one transaction; a referral event's as the matcher's batch.
@dataclass(frozen=True)
class Step:
    label: str
    act: Callable[[Matcher, PostgresUnitOfWork], Any]
    referral_event: bool = False


def register(h: HadEstablishment) -> Step:
    return Step(f"register {h.finess}", lambda m, uow: uow.store.upsert_had(h))


def declare(d: CapacityDeclaration) -> Step:
    return Step(f"declare {d.had_finess}={d.places_available}", lambda m, uow: m.declare(uow, d, "test"))


def event(message) -> Step:
    return Step(type(message).__name__,
                lambda m, uow: m.handle(uow, wrap(message, "test", time=dt(message.header.occurred_at))), True)


def _headers(raw: str) -> list[tuple[str, str]]:
    return [tuple(pair) for pair in json.loads(raw)]


async def current_offer(conn: asyncpg.Connection, referral_id: str):
    """The last offer the matcher published for the referral (what the referral service saw)."""
    for row in await conn.fetch("SELECT headers, payload FROM outbox WHERE topic = $1 ORDER BY id DESC", MATCHING_EVENTS.name):
        ce_type = dict(_headers(row["headers"]))["ce_type"]
        message = message_class(ce_type).FromString(row["payload"])
        if ce_type == "reflexe.v1.OfferProposed" and message.referral_id == referral_id:
            return message
    raise AssertionError(f"no offer for {referral_id}")


def answer(kind: str, referral_id: str, at: datetime) -> Step:
    """The HAD's answer (or the hold clock) to the referral's current offer, whichever it is in this run."""

    async def act(matcher: Matcher, uow: PostgresUnitOfWork) -> None:
        offer = await current_offer(uow.conn, referral_id)
        h = header(referral_id, at, f"had:{offer.had_finess}")
        message = {
            "accept": lambda: referral_pb2.OfferAccepted(header=h, offer_id=offer.offer_id, had_finess=offer.had_finess),
            "decline": lambda: referral_pb2.OfferDeclined(header=h, offer_id=offer.offer_id, had_finess=offer.had_finess,
                                                          reason="NO_CAPACITY"),
            "expire": lambda: referral_pb2.OfferExpired(header=header(referral_id, at), offer_id=offer.offer_id,
                                                        had_finess=offer.had_finess),
            "admit": lambda: referral_pb2.PatientAdmitted(header=h, had_finess=offer.had_finess, place_of_care="HOME"),
        }[kind]()
        await matcher.handle(uow, wrap(message, "test", time=at))

    return Step(f"{kind} {referral_id[-2:]}", act, True)


def script(first: list[Step], referral_4: list[Step]) -> list[Step]:
    """The inputs, in order; `first` are the opening declarations, `referral_4` places the
    arrival of referral 4 relative to the third HAD's declaration."""
    return [
        register(had(H1, 10)), register(had(H2, 10, frozenset({EHPAD}))), register(had(H3, 20)),
        *first,
        event(requested(R[0], minutes(1))),
        event(requested(R[1], minutes(2), ehpad=True)),  # H2 has a convention with the EHPAD
        answer("decline", R[0], minutes(3)),  # a fast answer: its HAD ranks better next time
        event(requested(R[2], minutes(4))),
        answer("accept", R[1], minutes(20)),
        answer("expire", R[2], minutes(34)),
        *referral_4,
        event(requested(R[5], minutes(41))),
        answer("admit", R[1], minutes(50)),
        event(requested(R[6], minutes(51))),
        event(requested(R[7], minutes(52))),
        event(referral_pb2.ReferralCancelled(header=header(R[6], minutes(53), "desk:34"), reason="PATIENT_REFUSED")),
        event(requested(R[8], minutes(54))),
        # Referral 0 was escalated at minute 3 (its only other candidate was full): the desk picks H3.
        event(referral_pb2.DeskOfferRequested(header=header(R[0], minutes(55), "desk:34"), had_finess=H3)),
    ]


H3_DECLARES = declare(declaration(H3, 10, minutes(39)))  # 10/20 free beats H1's 2/10
BASELINE = script([declare(declaration(H1, 2, T0)), declare(declaration(H2, 1, T0 + timedelta(seconds=1)))],
                  [H3_DECLARES, event(requested(R[4], minutes(40)))])
SWAPPED_DECLARATIONS = script([declare(declaration(H2, 1, T0 + timedelta(seconds=1))), declare(declaration(H1, 2, T0))],
                              [H3_DECLARES, event(requested(R[4], minutes(40)))])
REFERRAL_BEFORE_DECLARATION = script([declare(declaration(H1, 2, T0)), declare(declaration(H2, 1, T0 + timedelta(seconds=1)))],
                                     [event(requested(R[4], minutes(40))), H3_DECLARES])


@dataclass
class Outcome:
    offers: list[dict]  # matching events in publication order
    holds: list[dict]


@pytest.fixture
async def replay(topics):
    """Runs a script on a fresh schema; drops the schemas afterwards."""
    schemas: list[str] = []

    async def run(steps: list[Step], in_memory: bool = False) -> Outcome:
        """in_memory: referral events run as the matcher's batches do in the service, deciding on
        the ledgers of its partition kept in memory (OwnedLedgers), not read from PostgreSQL."""
        schema = f"determinism_{uuid.uuid4().hex[:10]}"
        schemas.append(schema)
        pool = await create_pool(topics.database_url, schema)
        try:
            await migrate(pool, schema, "reflexe_capacity.migrations")
            matcher = Matcher(MatcherPolicy())
            owned = OwnedLedgers(pool)
            if in_memory:
                await owned.assigned(REFERRAL_EVENTS.name, {PARTITION})
            for step in steps:
                if in_memory and step.referral_event:
                    async with pool.acquire() as conn:
                        async with conn.transaction():
                            batch = await owned.begin(conn, REFERRAL_EVENTS.name, PARTITION)
                            await step.act(matcher, batch.uow)
                            await owned.end(batch)
                        owned.committed(batch)
                    continue
                async with pool.acquire() as conn, conn.transaction():
                    await step.act(matcher, PostgresUnitOfWork(conn))
            async with pool.acquire() as conn:
                offers = []
                for row in await conn.fetch("SELECT headers, payload FROM outbox WHERE topic = $1 ORDER BY id",
                                            MATCHING_EVENTS.name):
                    ce_type = dict(_headers(row["headers"]))["ce_type"]
                    message = message_class(ce_type).FromString(row["payload"])
                    offers.append({"type": ce_type, **json_format.MessageToDict(message, preserving_proto_field_name=True)})
                holds = [dict(r) for r in await conn.fetch(
                    "SELECT hold_id, referral_id, had_finess, made_at, expires_at, state, placed_under, converted_at, "
                    "answered_at, released_at, by_desk FROM holds ORDER BY hold_id")]
            return Outcome(offers, holds)
        finally:
            await pool.close()

    yield run
    conn = await asyncpg.connect(topics.database_url)
    try:
        for schema in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def summary(outcome: Outcome) -> list[tuple]:
    return [(o["type"].rsplit(".", 1)[1], o["referral_id"][-2:], o.get("had_finess", "-")) for o in outcome.offers]


async def test_same_inputs_same_order_give_the_same_offers(replay):
    first, second = await replay(BASELINE), await replay(BASELINE)
    assert first.offers == second.offers  # offer ids, HADs, hold_until, explanations (text and JSON)
    assert first.holds == second.holds
    # The script exercised what ranking and cascading depend on.
    kinds = [o["type"] for o in first.offers]
    assert kinds.count("reflexe.v1.OfferProposed") >= 8 and "reflexe.v1.MatchExhausted" in kinds
    assert any(o.get("by_desk") for o in first.offers)
    assert {h["state"] for h in first.holds} >= {"RELEASED", "CONVERTED", "ACTIVE"}
    offered = [o for o in first.offers if o["type"] == "reflexe.v1.OfferProposed"]
    assert all(o["explanation"] and o["explanation_json"] for o in offered)
    assert next(o for o in offered if o["referral_id"] == R[1])["had_finess"] == H2  # EHPAD convention first


async def test_decisions_on_the_ledgers_kept_in_memory_are_those_read_from_postgresql(replay):
    """The matcher as its partition's single writer decides on ledgers it keeps in memory: the same
    inputs give the same offers and holds as when every decision reads PostgreSQL."""
    from_postgresql, in_memory = await replay(BASELINE), await replay(BASELINE, in_memory=True)
    assert in_memory.offers == from_postgresql.offers
    assert in_memory.holds == from_postgresql.holds


async def test_independent_declarations_in_another_order_change_nothing(replay):
    baseline, swapped = await replay(BASELINE), await replay(SWAPPED_DECLARATIONS)
    assert swapped.offers == baseline.offers
    assert swapped.holds == baseline.holds


async def test_a_referral_processed_before_a_declaration_is_decided_differently(replay):
    baseline, reordered = await replay(BASELINE), await replay(REFERRAL_BEFORE_DECLARATION)
    assert reordered.offers != baseline.offers, "the comparison must be able to tell decisions apart"
    before = [o for o in baseline.offers if o["referral_id"] == R[4]]
    after = [o for o in reordered.offers if o["referral_id"] == R[4]]
    # After H3's declaration, referral 4 is offered to H3; before it, H3 was not a candidate.
    assert before[0]["had_finess"] == H3
    assert after[0].get("had_finess") != H3, (summary(baseline), summary(reordered))
