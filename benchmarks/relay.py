"""Outbox relay: an event committed with the state change that caused it → the record readable
on Kafka by a read_committed consumer, at a steady rate. The events go through
reflexe_common.outbox as every service's go (enqueue in the transaction, the relay woken at
commit, a Kafka transaction per batch), in a schema of their own, onto the referral log.

Run alone: python -m benchmarks.relay [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import bench_infra, figure, latency_figures, paced, percentiles, print_result, print_table  # noqa: E402
from reflexe.v1 import referral_pb2  # noqa: E402
from reflexe_common.db import create_pool, migrate  # noqa: E402
from reflexe_common.envelope import ts, wrap  # noqa: E402
from reflexe_common.outbox import OutboxRelay, enqueue  # noqa: E402
from reflexe_common.topics import REFERRAL_EVENTS, ensure_topics  # noqa: E402
from tests.support.infra import Infra  # noqa: E402
from tests.support.kafka import follow_from_end  # noqa: E402
from tests.support.services import eventually  # noqa: E402

DEPARTMENT = "34"
P50_TARGET_MS = 5


class Arrivals:
    """Follows the referral log read_committed from its end and notes when each event id arrived."""

    def __init__(self, kafka: dict) -> None:
        self.kafka = kafka
        self.at: dict[str, float] = {}
        self.ready = asyncio.Event()

    async def follow(self) -> None:
        async for now, records in follow_from_end(self.kafka, REFERRAL_EVENTS, self.ready, fetch_max_wait_ms=100):
            for record in records:
                event_id = dict(record.headers).get("ce_id", b"").decode()
                self.at.setdefault(event_id, now)


class TimedRelay(OutboxRelay):
    """The relay as every service runs it, with the moments each event passes a step noted from
    outside (its methods wrapped, its producer's sends and commit timed): where the time goes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.picked: dict[str, float] = {}  # event id → the batch's read started
        self.read: dict[str, float] = {}  # → the batch read from PostgreSQL
        self.acked: dict[str, float] = {}  # → every record of its batch acknowledged by the broker
        self.journaled: dict[str, float] = {}  # → the batch's journal row written
        self.committed: dict[str, float] = {}  # → the Kafka transaction committed
        self._batch: list[str] = []

    async def _next_batch(self, db):
        started = time.perf_counter()
        rows = await super()._next_batch(db)
        self._batch = [dict(r.headers)["ce_id"].decode() for r in rows]
        for event_id in self._batch:
            self.picked[event_id], self.read[event_id] = started, time.perf_counter()
        return rows

    async def _publish(self, producer, rows, db) -> None:
        relay = self

        class TimedDb:
            """The batch's first statement is its journal row, written inside the Kafka transaction
            once every record is acknowledged; the next one marks the rows, after the commit."""
            journaled = False

            async def execute(self, *args):
                if self.journaled:
                    return await db.execute(*args)
                for event_id in relay._batch:
                    relay.acked[event_id] = time.perf_counter()
                await db.execute(*args)
                self.journaled = True
                for event_id in relay._batch:
                    relay.journaled[event_id] = time.perf_counter()

        await super()._publish(producer, rows, TimedDb())

    async def _mark(self, db, batch_id, ids, state) -> None:
        for event_id in self._batch:  # the transaction committed as the block was left
            self.committed[event_id] = time.perf_counter()
        await super()._mark(db, batch_id, ids, state)


def phases(committed: dict[str, float], relay: TimedRelay, arrived: dict[str, float]) -> dict[str, list[float]]:
    ids = [i for i in committed if all(i in m for m in (relay.picked, relay.committed, arrived))]
    steps = [("commit -> relay reads (wake, previous batch)", committed, relay.picked),
             ("read the batch (PostgreSQL)", relay.picked, relay.read),
             ("send -> every record acknowledged", relay.read, relay.acked),
             ("journal row (PostgreSQL)", relay.acked, relay.journaled),
             ("Kafka commit (EndTxn)", relay.journaled, relay.committed),
             ("committed -> read by a consumer", relay.committed, arrived)]
    return {name: [end[i] - start[i] for i in ids] for name, start, end in steps}


def _event() -> object:
    header = referral_pb2.ReferralEventHeader(referral_id=str(uuid.uuid4()), department=DEPARTMENT,
                                              occurred_at=ts(datetime.now(UTC)), actor="system")
    return wrap(referral_pb2.ReferralEscalated(header=header, why="bench"), "bench/relay")


async def run(infra: Infra, rate: float, seconds: float, log_dir: Path) -> None:
    schema = f"bench_relay_{uuid.uuid4().hex[:8]}"
    pool = await create_pool(infra.database_url, schema)
    await migrate(pool, schema, "reflexe_common.sql")  # the platform's tables alone: outbox and its journal
    relay = TimedRelay(infra.database_url, schema, infra.kafka())
    arrivals = Arrivals(infra.kafka_options())
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(arrivals.follow())]
    committed: dict[str, float] = {}
    count = max(1, int(rate * seconds))
    try:
        await asyncio.wait_for(arrivals.ready.wait(), 30)
        await eventually(lambda: relay.is_leader, timeout=30, what="the relay leading")

        async def commit(_: int) -> None:
            envelope = _event()
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await enqueue(conn, REFERRAL_EVENTS.name, DEPARTMENT, envelope)
                committed[envelope.id] = time.perf_counter()

        async def all_arrived() -> None:
            await eventually(lambda: all(event_id in arrivals.at for event_id in committed), timeout=120,
                             interval=0.01, what=f"{len(committed)} records on Kafka")

        await paced(10, 20, commit)  # warm-up: the relay's producer and the consumer's fetches settle
        await all_arrived()
        committed.clear()
        elapsed = await paced(rate, count, commit)
        await all_arrived()
        latencies = [arrivals.at[event_id] - at for event_id, at in committed.items()]
        steps = phases(committed, relay, arrivals.at)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await pool.close()
    print_table(f"Relay benchmark: {count} events committed at {rate:.0f}/s (committing took {elapsed:.1f} s)", {
        "outbox commit -> record on Kafka (read_committed)": percentiles(latencies),
        **{f"  step: {name}": percentiles(samples) for name, samples in steps.items()},
    })
    print_result("relay", {
        "rate_per_s": figure(rate, "events/s"),
        **latency_figures("commit_to_record", latencies, p50_target_ms=P50_TARGET_MS),
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    with bench_infra() as infra:
        asyncio.run(ensure_topics(infra.kafka()))
        asyncio.run(run(infra, args.rate, args.seconds, Path(tempfile.mkdtemp(prefix="reflexe-bench-logs-"))))


if __name__ == "__main__":
    main()
