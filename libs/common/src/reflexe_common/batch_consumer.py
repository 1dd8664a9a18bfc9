"""A consumer that handles what each poll returned as one batch, in one PostgreSQL transaction.

For consumers whose handler can route many events in memory and write them with a few
statements (notify): a batch costs a handful of round trips whatever its size, and the batch is
whatever the broker had (never formed by a timer), so a lone event goes alone and at once.

At least once, as ConsumerLoop: the inbox claim of every event and its effects commit together,
then the offsets are committed by a background task (the next batch does not wait for the
broker's answer). A crash between the two redelivers records that the inbox then skips. A poison
record is dead-lettered before the transaction; when the batch fails otherwise, its records are
handled one by one by the RecordProcessor, so the good ones commit and only the bad one is
retried or dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from reflexe_common.envelope import Envelope, PoisonRecord, unwrap
from reflexe_common.inbox import TRANSIENT, DeadLetters, Record, RecordProcessor, commit_then_stop
from reflexe_common.kafka import KafkaAccess
from reflexe_common.metrics import CONSUMER_LAG, DUPLICATES_SKIPPED, HANDLER_SECONDS, init_consumer
from reflexe_common.topics import topic_label

log = logging.getLogger(__name__)

# Runs in the batch's transaction; what it returns is handed to `after_commit` once committed.
BatchHandler = Callable[[asyncpg.Connection, Sequence[Envelope]], Awaitable[Any]]
MAX_RECORDS = 500


class BatchConsumerLoop:
    def __init__(self, kafka: KafkaAccess, group_id: str, topics: list[str], pool: asyncpg.Pool,
                 dead_letters: DeadLetters, processor: RecordProcessor, handle_batch: BatchHandler,
                 after_commit: Callable[[Any], None] | None = None, client_id: str | None = None,
                 max_records: int = MAX_RECORDS) -> None:
        """`processor` handles records one by one when a batch fails (its handler must do for one
        event what `handle_batch` does for many, with the same consumer name and no verifier)."""
        self._consumer = AIOKafkaConsumer(
            **kafka.options(),
            group_id=group_id,
            client_id=client_id or group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        self._topics = topics
        self._group = group_id
        self._processor = processor
        self._pool = pool
        self._dead_letters = dead_letters
        self._handle_batch = handle_batch
        self._after_commit = after_commit
        self._max_records = max_records
        self._lag: dict[TopicPartition, int] = {}
        self._to_commit: dict[TopicPartition, int] = {}  # the next offset of each partition, handled
        self._commit_wanted = asyncio.Event()
        init_consumer(processor.consumer, group_id, [topic_label(t) for t in topics])
        self.started = asyncio.Event()

    @property
    def consumer(self) -> str:
        return self._processor.consumer

    async def run(self) -> None:
        committer = asyncio.create_task(self._commit_forever(), name=f"{self._group}-offsets")
        conn: asyncpg.Connection | None = None
        try:
            await self._consumer.start()  # inside the try: see ConsumerLoop.run
            self._consumer.subscribe(self._topics, listener=_CommitOnRevoke(self))
            self.started.set()
            while True:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
                if not batches:
                    continue
                records = [Record(r.topic, r.partition, r.offset, r.key, r.value, list(r.headers or ()))
                           for rs in batches.values() for r in rs]
                # The batch holds one connection of the pool for as long as the loop runs: no
                # acquiring and resetting per batch.
                conn = await self._handle(records, conn)
                for tp, rs in batches.items():
                    self._to_commit[tp] = rs[-1].offset + 1
                    self._lag[tp] = max(0, (self._consumer.highwater(tp) or 0) - rs[-1].offset - 1)
                    label = topic_label(tp.topic)
                    CONSUMER_LAG.labels(self._group, label).set(
                        sum(lag for other, lag in self._lag.items() if topic_label(other.topic) == label))
                self._commit_wanted.set()
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            if conn is not None:
                await self._pool.release(conn)
            await commit_then_stop(self._consumer, self._commit_pending("final offset commit failed"))

    async def _handle(self, records: list[Record], conn: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """Handles the records; returns the connection to keep (None after losing it)."""
        started = time.perf_counter()
        decoded: list[Envelope] = []
        for record in records:
            try:
                decoded.append(unwrap(record.headers, record.value))
            except PoisonRecord as exc:
                await self._dead_letters.send(self.consumer, record, str(exc))
        if not decoded:
            return conn
        backoff = 0.1
        while True:
            try:
                if conn is None:
                    conn = await self._pool.acquire()
                async with conn.transaction():
                    claimed = await self._claim_all(conn, decoded)
                    fresh = []
                    for envelope in decoded:  # an id repeated in the batch: its first occurrence
                        if envelope.id in claimed:
                            claimed.discard(envelope.id)
                            fresh.append(envelope)
                    result = await self._handle_batch(conn, fresh) if fresh else None
                break
            except TRANSIENT as exc:
                log.warning("transient failure, retrying the batch", extra={"consumer": self.consumer,
                                                                           "error": repr(exc)})
                conn = await self._drop(conn)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                log.warning("batch failed; handling its records one by one", exc_info=True,
                            extra={"consumer": self.consumer, "records": len(records)})
                if conn is not None and conn.is_closed():
                    conn = await self._drop(conn)
                for record in records:
                    await self._processor.process(record)
                return conn
        DUPLICATES_SKIPPED.labels(self.consumer).inc(len(decoded) - len(fresh))
        if result is not None and self._after_commit is not None:
            try:
                self._after_commit(result)
            except Exception:  # committed already: what is told late is told by other means
                log.exception("after-commit hook failed", extra={"consumer": self.consumer})
        per_record = (time.perf_counter() - started) / len(decoded)
        for _ in decoded:
            HANDLER_SECONDS.labels(self.consumer, "handled").observe(per_record)
        return conn

    async def _drop(self, conn: asyncpg.Connection | None) -> None:
        if conn is not None:
            try:
                await self._pool.release(conn)
            except Exception:
                conn.terminate()
        return None

    async def _claim_all(self, conn: asyncpg.Connection, envelopes: list[Envelope]) -> set[str]:
        rows = await conn.fetch(
            "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING "
            "RETURNING event_id", self.consumer, [e.id for e in envelopes],
        )
        return {row["event_id"] for row in rows}

    async def _commit_forever(self) -> None:
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit_pending("offset commit failed; kept for the next one")

    async def _commit_pending(self, failure: str, only: set[TopicPartition] | None = None) -> None:
        offsets = {tp: o for tp, o in self._to_commit.items() if only is None or tp in only}
        if not offsets:
            return
        for tp in offsets:
            del self._to_commit[tp]
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:
            log.warning(failure, extra={"consumer": self.consumer, "error": repr(exc)})
            assigned = self._consumer.assignment()
            for tp, offset in offsets.items():  # a partition still ours: committed with its next batch
                if tp in assigned and tp not in self._to_commit:
                    self._to_commit[tp] = offset


class _CommitOnRevoke(ConsumerRebalanceListener):
    """A partition leaving commits what was handled of it, so its next owner redelivers less."""

    def __init__(self, loop: BatchConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked) -> None:
        await self._loop._commit_pending("offset commit on revocation failed; records will be redelivered",
                                         only=set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        pass
