"""The batch processor on a real PostgreSQL: a batch that fails is handled again record by record,
so its good events commit once each and only the bad one is dead-lettered; a record that cannot
be decoded is dead-lettered once, before the batch, and not again when the batch falls back."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import pytest
from reflexe.v1 import referral_pb2

from reflexe_common.batch_processor import BatchProcessor
from reflexe_common.envelope import Envelope, ts, wrap
from reflexe_common.inbox import Record, RecordProcessor
from tests.support.schema import own_schema

pytestmark = pytest.mark.integration
BAD = "the one event the handlers refuse"


class KeptDeadLetters:
    """The dead-letter topic's side, kept in memory: which record went there, and why."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []

    async def send(self, consumer: str, record: Record, reason: str) -> None:
        self.sent.append((record.offset, reason))


def _record(offset: int, actor: str) -> tuple[Record, str]:
    """A record of an event, and the event's id."""
    header = referral_pb2.ReferralEventHeader(referral_id=str(uuid.uuid4()), department="34", actor=actor)
    header.occurred_at.CopyFrom(ts(datetime.now(UTC)))
    envelope = wrap(referral_pb2.AdmissionOverdue(header=header), "test")
    return Record("t", 0, offset, b"34", envelope.value(), envelope.headers()), envelope.id


async def test_a_failed_batch_commits_its_good_events_once_and_dead_letters_the_bad_and_the_poison_once(infra):
    async with own_schema(infra.database_url, "batches", "reflexe_common.sql") as (_, pool):
        handled: list[str] = []

        def refuse_the_bad(envelopes: Sequence[Envelope]) -> None:
            if any(e.message.header.actor == BAD for e in envelopes):
                raise ValueError("refused")

        async def handle_batch(conn: asyncpg.Connection, envelopes: Sequence[Envelope]) -> list[str]:
            refuse_the_bad(envelopes)
            handled.extend(e.id for e in envelopes)
            return [e.id for e in envelopes]

        async def handle_one(conn: asyncpg.Connection, envelope: Envelope) -> None:
            refuse_the_bad([envelope])
            handled.append(envelope.id)

        dead_letters = KeptDeadLetters()
        told: list[list[str]] = []
        one_by_one = RecordProcessor("batches", pool, dead_letters, handle_one)  # type: ignore[arg-type]
        processor = BatchProcessor(pool, dead_letters, one_by_one, handle_batch, after_commit=told.append)  # type: ignore[arg-type]
        (first, first_id), (second, second_id), (bad, _) = _record(0, "a"), _record(2, "b"), _record(3, BAD)
        poison = Record("t", 0, 1, b"34", b"not an envelope", [])
        try:
            await processor.process_poll([first, poison, second, bad])
            assert told == []  # the batch was not committed: its readers are told nothing of it
            await processor.process_poll([first, second])  # redelivered: nothing new
            later, later_id = _record(4, "c")
            await processor.process_poll([later])
        finally:
            await processor.close()

        assert handled == [first_id, second_id, later_id]
        assert [offset for offset, _ in dead_letters.sent] == [1, 3]
        assert "failed 3 times" in dead_letters.sent[1][1]
        assert told == [[later_id]]
        assert await pool.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'batches'") == 3
