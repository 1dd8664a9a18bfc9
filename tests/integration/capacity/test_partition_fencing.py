"""The matcher as single writer of its partitions, fenced by an epoch, on the real PostgreSQL.

Two matcher processes are played by two RecordProcessors, each with its own OwnedLedgers (its
ledgers in memory), on one fresh schema. The old one owns the partition of department 34 and
places a hold; the new one is then assigned the partition (its epoch bumped, its ledgers loaded
with that hold counted): the old one's next batch is refused (nothing of it committed: no inbox
row, no hold, no offer), while the new one decides on the same records. A batch of the old owner
still open when the new one is assigned holds the new one's assignment until it commits, so the
new owner's memory counts what it wrote. A ledger changed behind the owner's back (a declaration
through another process) is seen by its next batch.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from reflexe.v1 import referral_pb2

from reflexe_capacity.adapters.owned_ledgers import OwnedLedgers
from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.domain.capacity import CapacityDeclaration
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.entrypoints.consumers import referral_events_handler
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_common.db import create_pool, migrate
from reflexe_common.envelope import message_class, ts, unwrap, wrap
from reflexe_common.inbox import Record, RecordProcessor, RetryBatch
from reflexe_common.partitioning import department_partition
from reflexe_common.topics import REFERRAL_EVENTS
from reflexe_common.vocabulary import CapacityStatus, Equipment
from tests.support.data import pseudonym
from tests.support.services import eventually

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
HAD = "340000017"
COMMUNE = "34172"  # a schema of its own: nothing else competes
TOPIC = REFERRAL_EVENTS.name
PARTITION = department_partition("34")


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, consumer: str, record: Record, reason: str) -> None:
        self.sent.append(reason)


def requested(n: int) -> tuple[str, Record]:
    referral_id = str(uuid.UUID(int=n))
    at = T0 + timedelta(minutes=n)
    header = referral_pb2.ReferralEventHeader(referral_id=referral_id, department="34", occurred_at=ts(at), actor="test")
    message = referral_pb2.ReferralRequested(header=header, request=referral_pb2.ReferralRequest(
        referral_id=referral_id, department="34", source=referral_pb2.Source(kind="ED", finess="340780477"),
        patient=referral_pb2.Patient(pseudonym=pseudonym(), birth_year=1940, sex="F", care_commune=COMMUNE,
                                     place_of_care="HOME"),
        clinical=referral_pb2.Clinical(main_mpp="03", karnofsky=50, urgency="WITHIN_24H", expected_duration_days=10),
        conditions=referral_pb2.Conditions(patient_consent=True, gp_agreement=True, caregiver_present=True),
        requested_at=ts(at)))
    envelope = wrap(message, "test", time=at)
    return referral_id, Record(TOPIC, PARTITION, n, b"34", envelope.value(), envelope.headers())


@pytest.fixture
async def pool(infra):
    schema = f"fencing_{uuid.uuid4().hex[:10]}"
    pool = await create_pool(infra.database_url, schema)
    await migrate(pool, schema, "reflexe_capacity.migrations")
    try:
        yield pool
    finally:
        await pool.close()
        conn = await asyncpg.connect(infra.database_url)
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def register_and_declare(pool: asyncpg.Pool, places: int, minute: int) -> None:
    """The test's HAD, serving its commune, with `places` declared."""
    async with pool.acquire() as conn:
        await CapacityStore(conn).upsert_had(HadEstablishment(
            HAD, "HAD Test", frozenset({"34"}), frozenset(), frozenset({"03"}), frozenset({Equipment.OXYGEN}),
            frozenset({COMMUNE}), authorised_places=10))
    await declare(pool, places, minute)


async def declare(pool: asyncpg.Pool, places: int, minute: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await Matcher(MatcherPolicy()).declare(PostgresUnitOfWork(conn), CapacityDeclaration(
            HAD, places, places, CapacityStatus.OPEN, T0 + timedelta(minutes=minute)), "test")


async def decisions(pool: asyncpg.Pool) -> dict[str, str]:
    """referral id → the HAD offered, or "exhausted"."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT headers, payload FROM outbox ORDER BY id")
    found = {}
    for row in rows:
        ce_type = dict(json.loads(row["headers"]))["ce_type"]
        if ce_type in ("reflexe.v1.OfferProposed", "reflexe.v1.MatchExhausted"):
            message = message_class(ce_type).FromString(row["payload"])
            found[message.referral_id] = getattr(message, "had_finess", "") or "exhausted"
    return found


def processor(pool: asyncpg.Pool, owned: OwnedLedgers, dead_letters: DeadLetters) -> RecordProcessor:
    return RecordProcessor("matcher", pool, dead_letters, referral_events_handler(Matcher(MatcherPolicy())),
                           scope=owned)


async def bump_waits_for_a_lock(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as probe:
        return bool(await probe.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO partition_epochs%'"))


async def test_the_old_owner_cannot_commit_once_the_partition_was_assigned_again(pool):
    await register_and_declare(pool, 2, 0)
    dead_letters = DeadLetters()
    old, new = OwnedLedgers(pool), OwnedLedgers(pool)
    old_processor, new_processor = processor(pool, old, dead_letters), processor(pool, new, dead_letters)

    await old.assigned(TOPIC, {PARTITION})
    first, first_record = requested(1)
    assert await old_processor.process(first_record) == "handled"
    assert (await decisions(pool))[first] == HAD
    assert old.get(HAD)[1].live_places() == 1  # its memory follows what it committed

    await new.assigned(TOPIC, {PARTITION})
    assert new.partitions()[PARTITION] == old.partitions()[PARTITION] + 1
    assert new.get(HAD)[1].live_places() == 1  # loaded with the old owner's hold counted

    second, second_record = requested(2)
    assert await old_processor.process(second_record) == "fenced"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1  # the first record's only
        assert await conn.fetchval("SELECT count(*) FROM match_requests WHERE referral_id = $1",
                                   uuid.UUID(second)) == 0
    assert second not in await decisions(pool)
    # A batch of several records is refused as a whole too.
    third, third_record = requested(3)
    await old_processor.process_batch([second_record, third_record])
    assert second not in await decisions(pool) and third not in await decisions(pool)

    # The new owner decides on the same records: the last place, then none.
    await new_processor.process_batch([second_record, third_record])
    made = await decisions(pool)
    assert (made[second], made[third]) == (HAD, "exhausted")
    assert dead_letters.sent == []


async def test_an_assignment_waits_for_the_old_owners_open_batch(pool):
    await register_and_declare(pool, 3, 0)
    old, new = OwnedLedgers(pool), OwnedLedgers(pool)
    await old.assigned(TOPIC, {PARTITION})
    referral, record = requested(1)
    matcher = Matcher(MatcherPolicy())
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        context = await old.begin(conn, TOPIC, PARTITION)  # the epoch row held FOR SHARE from here
        await matcher.handle(context.uow, unwrap(record.headers, record.value))
        await old.end(context)
        taking = asyncio.create_task(new.assigned(TOPIC, {PARTITION}))
        await eventually(lambda: bump_waits_for_a_lock(pool), timeout=10,
                         what="the new owner's bump waiting for the batch")
        assert not taking.done()
        await transaction.commit()
        old.committed(context)
    await asyncio.wait_for(taking, 10)
    assert (await decisions(pool))[referral] == HAD
    assert new.get(HAD)[1].live_places() == 2  # the old owner's last hold is in the new one's memory


async def test_a_ledger_changed_by_another_process_is_seen_by_the_next_batch(pool):
    await register_and_declare(pool, 0, 0)
    owner = OwnedLedgers(pool)
    owner_processor = processor(pool, owner, DeadLetters())
    await owner.assigned(TOPIC, {PARTITION})
    first, first_record = requested(1)
    assert await owner_processor.process(first_record) == "handled"
    assert (await decisions(pool))[first] == "exhausted"
    await declare(pool, 1, 5)  # through another door: the owner's memory still says no place
    second, second_record = requested(6)
    assert await owner_processor.process(second_record) == "handled"
    assert (await decisions(pool))[second] == HAD


async def test_a_batch_whose_ledger_changed_before_its_holds_were_written_runs_again(pool):
    """The batch's new holds are written at its end, conditional on the versions it decided on: a
    declaration committed in between (another process) refuses the batch, which rolls back and
    decides again on the new figures."""
    await register_and_declare(pool, 1, 0)
    owner = OwnedLedgers(pool)
    await owner.assigned(TOPIC, {PARTITION})
    referral, record = requested(6)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        context = await owner.begin(conn, TOPIC, PARTITION)
        await Matcher(MatcherPolicy()).handle(context.uow, unwrap(record.headers, record.value))
        await declare(pool, 0, 5)  # the HAD closes its last place meanwhile
        with pytest.raises(RetryBatch):
            await owner.end(context)
        await transaction.rollback()
        owner.rolled_back(context)
    assert referral not in await decisions(pool)
    assert await processor(pool, owner, DeadLetters()).process(record) == "handled"
    assert (await decisions(pool))[referral] == "exhausted"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM holds") == 0


async def test_a_record_on_another_partition_than_its_departments_is_decided_on_postgresql(pool):
    """A producer keying by department but not placing it on the department's partition (another
    partitioner): the batch's memory was refreshed for its own partition's departments only, so
    the referral's department is read from PostgreSQL, and its HAD registered since is found."""
    other = (PARTITION + 1) % REFERRAL_EVENTS.partitions
    owner = OwnedLedgers(pool)
    await owner.assigned(TOPIC, {PARTITION, other})
    await register_and_declare(pool, 1, 0)
    referral, record = requested(1)
    elsewhere = Record(TOPIC, other, record.offset, record.key, record.value, record.headers)
    assert await processor(pool, owner, DeadLetters()).process(elsewhere) == "handled"
    assert (await decisions(pool))[referral] == HAD


async def test_a_record_that_arrives_while_its_partition_is_being_taken_waits_for_it(pool):
    """faust resumes fetching while the rebalance's handlers run: a record can reach the matcher
    before its partition is taken. Refused, it would be acknowledged and its offset committed by
    the partition's owner: a referral never decided (the full chaos run found 33)."""
    await register_and_declare(pool, 2, 0)
    owner = OwnedLedgers(pool)
    referral, record = requested(1)
    handling = asyncio.create_task(processor(pool, owner, DeadLetters()).process(record))
    await owner.assigned(TOPIC, {PARTITION})
    assert await asyncio.wait_for(handling, 10) == "handled"
    assert (await decisions(pool))[referral] == HAD


async def test_a_record_of_a_partition_never_taken_is_refused_after_the_wait(pool):
    owner = OwnedLedgers(pool, taking_seconds=0.2)
    _, record = requested(1)
    assert await processor(pool, owner, DeadLetters()).process(record) == "fenced"


async def test_a_record_waits_for_a_taking_that_outlasts_the_bound(pool):
    """The bound is on the taking beginning, not on its length: a taking held up (here by another
    owner's open batch; in production by PostgreSQL restarting) is waited for, and the record is
    decided once the partition is taken, instead of being refused while this process owns it."""
    await register_and_declare(pool, 2, 0)
    old, owner = OwnedLedgers(pool), OwnedLedgers(pool, taking_seconds=0.2)
    await old.assigned(TOPIC, {PARTITION})
    referral, record = requested(1)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        await old.begin(conn, TOPIC, PARTITION)  # the epoch row held FOR SHARE: the bump waits
        taking = asyncio.create_task(owner.assigned(TOPIC, {PARTITION}))
        await eventually(lambda: bump_waits_for_a_lock(pool), timeout=10, what="the bump waiting for the batch")
        handling = asyncio.create_task(processor(pool, owner, DeadLetters()).process(record))
        done, _ = await asyncio.wait({handling}, timeout=2.0)  # ten times the bound
        assert not done, "the record was not kept waiting for its partition"
        await transaction.rollback()
    await asyncio.wait_for(taking, 10)
    assert await asyncio.wait_for(handling, 10) == "handled"
    assert (await decisions(pool))[referral] == HAD
