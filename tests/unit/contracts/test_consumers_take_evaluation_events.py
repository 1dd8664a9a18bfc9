"""Every consumer of the referral event log takes the events of the evaluation before admission
(AvisGiven, an OfferAccepted pending evaluation, EvaluationConfirmed, AcceptanceWithdrawn): decoded
and handled in its transaction, never dead-lettered. Same harness as the ED exit's contract test:
the shared idempotent-consumer processor with a recording connection instead of PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from reflexe.v1 import referral_pb2 as pb

from reflexe_common.envelope import ts, wrap
from reflexe_common.inbox import Record, RecordProcessor
from reflexe_common.topics import REFERRAL_EVENTS
from tests.unit.contracts.test_consumers_take_ed_exit import (CONSUMERS, REFERRAL_ID, DeadLetters, Pool,
                                                               RecordingConnection)

AT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
HAD = "340780477"


def header(actor: str) -> pb.ReferralEventHeader:
    return pb.ReferralEventHeader(referral_id=REFERRAL_ID, department="34", occurred_at=ts(AT), actor=actor)


MESSAGES = {
    "AvisGiven": lambda: pb.AvisGiven(header=header(f"liaison:{HAD}"), eligible=False, reason="MEDICAL_NOT_ELIGIBLE"),
    "OfferAccepted pending": lambda: pb.OfferAccepted(header=header(f"had:{HAD}"), offer_id="o1", had_finess=HAD,
                                                      pending_evaluation=True),
    "EvaluationConfirmed": lambda: pb.EvaluationConfirmed(header=header(f"had:{HAD}"), offer_id="o1", had_finess=HAD),
    "AcceptanceWithdrawn": lambda: pb.AcceptanceWithdrawn(header=header(f"had:{HAD}"), offer_id="o1", had_finess=HAD,
                                                          reason="MEDICAL_NOT_ELIGIBLE"),
}


class UnknownSourceConnection(RecordingConnection):
    """As PostgreSQL answers for a referral whose request notify has not stored: the inbox claim
    succeeds, no source hospital is known (these events reach the hospital when it is)."""

    async def fetchval(self, sql: str, *args):
        self.statements.append((sql, args))
        return 1 if "inbox" in sql else None


def record(message) -> Record:
    envelope = wrap(message, "reflexe/referral")
    return Record(REFERRAL_EVENTS.name, 0, 0, b"34", envelope.value(), envelope.headers())


@pytest.mark.parametrize("event", sorted(MESSAGES))
@pytest.mark.parametrize("consumer", sorted(CONSUMERS))
async def test_the_consumer_handles_the_evaluation_events_without_dead_lettering_them(consumer, event):
    pool, dead_letters = Pool(), DeadLetters()
    pool.conn = UnknownSourceConnection()
    processor = RecordProcessor(consumer, pool, dead_letters, CONSUMERS[consumer]())
    assert await processor.process(record(MESSAGES[event]())) == "handled"
    assert dead_letters.sent == []
