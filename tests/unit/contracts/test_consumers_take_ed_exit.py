"""Every consumer of the referral event log takes reflexe.v1.EdExitRecorded, the event added for
the ED exit: decoded, handled in its transaction and not dead-lettered (notify and the matcher
ignore it, the indicators fold it). Each handler runs in the shared idempotent-consumer
processor, the same path as on Kafka, with a recording connection instead of PostgreSQL."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from reflexe.v1 import referral_pb2 as pb

from reflexe_capacity.entrypoints.consumers import referral_events_handler
from reflexe_capacity.service_layer.matcher import Matcher, MatcherPolicy
from reflexe_common.envelope import ts, wrap
from reflexe_common.inbox import Record, RecordProcessor
from reflexe_common.topics import REFERRAL_EVENTS
from reflexe_indicators.service_layer.facts import handler as indicators_handler
from reflexe_notify.service_layer.notifications import event_handler as notify_handler

REFERRAL_ID = str(uuid.uuid4())
EXITED = datetime(2026, 11, 26, 8, 29, tzinfo=UTC)


class RecordingConnection:
    """Answers as PostgreSQL would for a first delivery: the inbox claim succeeds, one live
    generation of facts exists; every statement is kept."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []

    @asynccontextmanager
    async def transaction(self, **_):
        yield

    async def fetchval(self, sql: str, *args):
        self.statements.append((sql, args))
        return 1

    async def fetch(self, sql: str, *args):
        self.statements.append((sql, args))
        return [{"generation": 1}] if "FROM generations" in sql else []

    async def fetchrow(self, sql: str, *args):
        self.statements.append((sql, args))
        return None

    async def execute(self, sql: str, *args):
        self.statements.append((sql, args))
        return "OK"


class Pool:
    def __init__(self) -> None:
        self.conn = RecordingConnection()

    @asynccontextmanager
    async def acquire(self):
        yield self.conn


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, consumer: str, record: Record, reason: str) -> None:
        self.sent.append(f"{consumer}: {reason}")


def ed_exit_record() -> Record:
    message = pb.EdExitRecorded(
        header=pb.ReferralEventHeader(referral_id=REFERRAL_ID, department="34", occurred_at=ts(EXITED),
                                      actor="hospital:340780477"),
        exited_at=ts(EXITED))
    envelope = wrap(message, "reflexe/referral")
    return Record(REFERRAL_EVENTS.name, 0, 0, b"34", envelope.value(), envelope.headers())


CONSUMERS = {
    "notify": lambda: notify_handler(attempt_limit=5),
    "matcher": lambda: referral_events_handler(Matcher(MatcherPolicy())),
    "indicators": lambda: indicators_handler("indicators"),
}


@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
async def test_the_consumer_handles_an_ed_exit_without_dead_lettering_it(consumer):
    pool, dead_letters = Pool(), DeadLetters()
    processor = RecordProcessor(consumer, pool, dead_letters, CONSUMERS[consumer]())
    assert await processor.process(ed_exit_record()) == "handled"
    assert dead_letters.sent == []
    writes = [sql for sql, _ in pool.conn.statements if "INSERT INTO inbox" not in sql]
    if consumer == "indicators":  # the exit time lands in the referral's facts
        [(sql, args)] = [(sql, args) for sql, args in pool.conn.statements if "referral_facts" in sql]
        assert "ed_exited_at" in sql and [EXITED] in args and [REFERRAL_ID] in args
    else:  # nobody is notified of it and the matcher has nothing to do
        assert writes == []
