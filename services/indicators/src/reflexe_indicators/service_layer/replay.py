"""Rebuilding every indicator from the beginning of the log into a fresh generation, then
switching over atomically while the service keeps running and answering.

1. register generation N+1 as ``building`` with empty tables: from then on the live consumer
   folds every event it handles into N+1 too;
2. read the end offsets of the referral and capacity topics (read_committed): every event
   before them is read by the replay, every later one is folded by the live consumer;
3. read the topics from the beginning in big batches (own consumer group, partitions assigned,
   no rebalance), fold each batch in memory (domain.facts.Batch: one merged row per key) and
   upsert it per table (COPY into a temporary table, one ``INSERT … SELECT … ON CONFLICT``), then commit the
   batch's offsets. There is no inbox on this path: idempotency comes from the facts being
   keyed, order-independent merges, so a batch replayed after a crash changes nothing;
4. once every partition reached its end offset, the secondary indexes are built (the tables
   were loaded without them) and one transaction makes N+1 current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from google.protobuf import message_factory, symbol_database

from reflexe_common.kafka import KafkaAccess
from reflexe_common.topics import CAPACITY_EVENTS, REFERRAL_EVENTS, Topic
from reflexe_indicators.adapters.store import (
    create_indexes, create_stages, generation_schema, start_generation, switch_to, upsert_batch)
from reflexe_indicators.domain.facts import FOLDED_TYPES, TABLES, Batch, fold

log = logging.getLogger(__name__)
REPLAYED_TOPICS: tuple[Topic, ...] = (REFERRAL_EVENTS, CAPACITY_EVENTS)
# Each CloudEvents type seen: its message class, IGNORED when the fold reads nothing from it,
# None when it names no known message.
_classes: dict[bytes, type | None] = {}
IGNORED = object()  # a record of a type the fold ignores: skipped unparsed, not an error
# Records folded between two turns of the event loop: the batch being written meanwhile sends each
# of its statements as soon as the previous one is answered, not once the whole next batch is folded.
FOLDED_BETWEEN_TURNS = 64


def _decode(headers, value: bytes | None):
    """A lazy decode of a CloudEvents record: its type header first, and the payload parsed only
    when the fold reads that type (the replay skips what the live path dead-letters). Returns the
    message, IGNORED, or None for a record the live path would refuse."""
    if value is None:
        return None
    for name, ce_type in headers:
        if name == "ce_type":
            break
    else:
        return None
    cls = _classes.get(ce_type, ...)
    if cls is ...:
        cls = _class_of(ce_type)
        _classes[ce_type] = cls
    if cls is None or cls is IGNORED:
        return cls
    message = cls()
    try:
        message.ParseFromString(value)
    except Exception:
        return None
    return message


def _class_of(ce_type: bytes):
    try:
        name = ce_type.decode()
        descriptor = symbol_database.Default().pool.FindMessageTypeByName(name)
    except (KeyError, UnicodeDecodeError):
        return None
    return message_factory.GetMessageClass(descriptor) if name in FOLDED_TYPES else IGNORED


@dataclass
class ReplayProgress:
    generation: int
    state: str = "building"
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    events: int = 0
    target: int = 0
    skipped: int = 0
    seconds: float | None = None
    error: str | None = None
    _t0: float = field(default_factory=time.perf_counter)

    def as_dict(self) -> dict:
        elapsed = self.seconds if self.seconds is not None else time.perf_counter() - self._t0
        return {"generation": self.generation, "state": self.state, "started_at": self.started_at.isoformat(),
                "events": self.events, "target": self.target, "skipped": self.skipped,
                "progress": (self.events / self.target) if self.target else (1.0 if self.state == "current" else 0.0),
                "seconds": round(elapsed, 3), "events_per_second": round(self.events / elapsed, 1) if elapsed else None,
                "error": self.error}


class Replayer:
    def __init__(self, pool: asyncpg.Pool, kafka: KafkaAccess, base_schema: str, group_prefix: str,
                 batch_size: int = 5_000, topics: tuple[Topic, ...] = REPLAYED_TOPICS) -> None:
        self.pool = pool
        self.kafka = kafka
        self.base = base_schema
        self.group_prefix = group_prefix
        self.batch_size = batch_size
        self.topics = topics
        self.progress: ReplayProgress | None = None
        self.task: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def start(self) -> ReplayProgress | None:
        """Register a new generation and rebuild it in the background; None if one is building."""
        if self.running:
            return None
        async with self.pool.acquire() as conn:
            generation = await start_generation(conn, self.base)
        if generation is None:
            return None
        return self._launch(generation)

    async def resume(self) -> None:
        """At start-up: a generation left building by a stopped process is finished."""
        generation = await self.pool.fetchval("SELECT generation FROM generations WHERE state = 'building'")
        if generation is not None:
            self._launch(generation)

    def _launch(self, generation: int) -> ReplayProgress:
        self.progress = ReplayProgress(generation)
        self.task = asyncio.create_task(self._run(self.progress), name=f"indicators-replay-g{generation}")
        return self.progress

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def _run(self, progress: ReplayProgress) -> None:
        try:
            await self._rebuild(progress)
        except asyncio.CancelledError:
            raise  # stopped with the process: resumed at the next start
        except Exception as exc:
            log.exception("replay failed", extra={"generation": progress.generation})
            progress.state, progress.error = "failed", repr(exc)
            await self.pool.execute("UPDATE generations SET state = 'failed', error = $2 WHERE generation = $1",
                                    progress.generation, repr(exc)[:2000])

    async def _rebuild(self, progress: ReplayProgress) -> None:
        schema = generation_schema(self.base, progress.generation)
        consumer = AIOKafkaConsumer(
            **self.kafka.options(), group_id=f"{self.group_prefix}-replay-g{progress.generation}",
            enable_auto_commit=False, auto_offset_reset="earliest", isolation_level="read_committed",
            # Small fetches and batches: what is fetched ahead, the batch being folded and the one
            # being written are all in memory at once, within the service's 150 MB budget (a
            # batch's rows are Python dicts, about 1 kB each; 20,000-record batches reached 250 MB).
            max_partition_fetch_bytes=256 * 1024, fetch_max_bytes=4 * 1024 * 1024,
            max_poll_records=self.batch_size)
        await consumer.start()
        try:
            tps = [TopicPartition(t.name, p) for t in self.topics for p in range(t.partitions)]
            consumer.assign(tps)
            end = await consumer.end_offsets(tps)  # after the generation was registered: see the docstring
            committed = {tp: await consumer.committed(tp) for tp in tps}
            for tp in tps:
                if committed[tp] is None:
                    await consumer.seek_to_beginning(tp)
            start = {tp: await consumer.position(tp) for tp in tps}
            beginning = await consumer.beginning_offsets(tps)
            progress.target = sum(end[tp] - beginning[tp] for tp in tps)
            progress.events = sum(start[tp] - beginning[tp] for tp in tps)
            pending = {tp for tp in tps if start[tp] < end[tp]}
            async with self.pool.acquire() as conn:  # the replay's own: its stages live on it
                await create_stages(conn, schema)
                await self._load(conn, consumer, schema, pending, end, progress)
            async with self.pool.acquire() as conn:
                await create_indexes(conn, schema)
            progress.seconds = time.perf_counter() - progress._t0
            async with self.pool.acquire() as conn:
                await conn.execute("UPDATE generations SET events = $2, target = $3, seconds = $4 WHERE generation = $1",
                                   progress.generation, progress.events, progress.target, progress.seconds)
                await switch_to(conn, self.base, progress.generation)
            progress.state = "current"
            log.info("replay switched over", extra={"generation": progress.generation, "events": progress.events,
                                                    "seconds": progress.seconds})
        finally:
            await consumer.stop()

    async def _load(self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, schema: str,
                    pending: set[TopicPartition], end: dict[TopicPartition, int], progress: ReplayProgress) -> None:
        """Reads the pending partitions up to their end offsets, folding and writing batch by batch."""
        writer: asyncio.Task | None = None
        try:
            while pending:
                fetched = await consumer.getmany(*pending, timeout_ms=200, max_records=self.batch_size)
                batch = Batch()
                offsets: dict[TopicPartition, OffsetAndMetadata] = {}
                for tp, records in fetched.items():
                    for first in range(0, len(records), FOLDED_BETWEEN_TURNS):
                        progress.skipped += _fold(records[first:first + FOLDED_BETWEEN_TURNS], batch)
                        await asyncio.sleep(0)  # the batch being written sends its next statement
                    if records:
                        offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
                for tp in list(pending):
                    if await consumer.position(tp) >= end[tp]:
                        pending.discard(tp)
                if writer is not None:
                    await writer  # one batch written while the next one is read and folded
                writer = asyncio.create_task(self._write(conn, consumer, schema, batch, offsets, progress,
                                                         sum(len(v) for v in fetched.values())))
            if writer is not None:
                await writer
        finally:  # the connection goes back to the pool with no write under way on it
            if writer is not None and not writer.done():
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)

    async def _write(self, conn: asyncpg.Connection, consumer: AIOKafkaConsumer, schema: str, batch: Batch,
                     offsets: dict[TopicPartition, OffsetAndMetadata], progress: ReplayProgress, records: int) -> None:
        async with conn.transaction():
            await upsert_batch(conn, schema, {name: list(rows.values()) for name, rows in batch.rows.items()},
                               then=f"UPDATE generations SET events = events + {int(records)}, "
                                    f"target = {int(progress.target)} WHERE generation = {int(progress.generation)}")
        if offsets:
            await consumer.commit(offsets)
        progress.events += records


def _fold(records, batch: Batch) -> int:
    """Records folded into the batch; returns how many the live path would refuse."""
    refused = 0
    for r in records:
        message = _decode(r.headers, r.value)
        if message is None:
            refused += 1
        elif message is not IGNORED:
            deltas = fold(message)
            if deltas:
                batch.add(deltas)
    return refused
