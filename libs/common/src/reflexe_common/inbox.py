"""The idempotent consumer: every record is decoded, deduplicated and handled in one PostgreSQL
transaction, so a redelivered event changes nothing; a record that can never be handled goes
to the dead-letter topic with its reason and the consumer carries on.

The same processor serves faust agents (reflexe_common.streams, every fixed set of topics) and
the plain aiokafka consumer that subscribes by pattern (ConsumerLoop, the inbound topics: faust
cannot).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from reflexe_common.envelope import Envelope, Headers, PoisonRecord, unwrap
from reflexe_common.kafka import KafkaAccess
from reflexe_common.metrics import CONSUMER_LAG, DEAD_LETTERS, DUPLICATES_SKIPPED, HANDLER_SECONDS, init_consumer
from reflexe_common.topics import DEAD_LETTERS as DEAD_LETTER_TOPIC
from reflexe_common.topics import topic_label

log = logging.getLogger(__name__)
PATTERN_REFRESH_MS = 3000
FINAL_COMMIT_SECONDS = 1.0


# A handler gets the batch's connection, or what the processor's PartitionScope made of it.
Handler = Callable[[Any, Envelope], Awaitable[None]]
# Errors that say "the infrastructure is away", not "this record is bad": retry, never dead-letter.
TRANSIENT = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
             asyncpg.TooManyConnectionsError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


# Checks a decoded record against where it came from (e.g. its sender); raises PoisonRecord.
Verifier = Callable[[Record, Envelope], None]


class Fenced(Exception):
    """The partition was assigned to another process since this one took it: its batch must not
    commit (the new owner handles those records again from the last committed offset)."""


class RetryBatch(Exception):
    """The state a batch decided on changed under it (another process committed first): roll it
    back and run it again at once, on fresh state; not a failure of the records."""


class PartitionScope(Protocol):
    """What a single writer per partition needs around each of its transactions: ``begin`` runs
    first in the transaction (it may refuse with Fenced, which rolls the batch back and skips it)
    and returns what the handler is given; ``end`` runs after the records, still inside it;
    ``committed``/``rolled_back`` tell the outcome, so that state kept in memory follows only
    what was committed. ``assigned``/``revoked`` follow the consumer group's rebalances."""

    async def assigned(self, topic: str, partitions: set[int]) -> None: ...

    async def ready(self, topic: str, partition: int) -> None:
        """Called before each transaction: returns once the partition is held here, or when no
        taking of it began within a bound (``begin`` then refuses). faust resumes fetching while
        a rebalance's signal handlers still run, so records can arrive before ``assigned`` has
        taken their partition; refused, they would be acknowledged and their offsets committed by
        a process that does own the partition: decisions never made."""

    def revoked(self, topic: str, partitions: set[int]) -> None: ...

    async def begin(self, conn: asyncpg.Connection, topic: str, partition: int) -> Any: ...

    async def end(self, context: Any) -> None: ...

    def committed(self, context: Any) -> None: ...

    def rolled_back(self, context: Any) -> None: ...


class DeadLetters:
    """Publishes poison records, untouched, with why and where they came from."""

    def __init__(self, kafka: KafkaAccess) -> None:
        self._producer = AIOKafkaProducer(**kafka.options(), enable_idempotence=True, acks="all")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def check(self) -> None:
        """Readiness: a broker answers a metadata request."""
        await self._producer.client.fetch_all_metadata()

    async def send(self, consumer: str, record: Record, reason: str) -> None:
        headers = [
            *record.headers,
            ("dlq_reason", reason.encode()[:4000]),
            ("dlq_consumer", consumer.encode()),
            ("dlq_topic", record.topic.encode()),
            ("dlq_partition", str(record.partition).encode()),
            ("dlq_offset", str(record.offset).encode()),
        ]
        await self._producer.send_and_wait(DEAD_LETTER_TOPIC.name, record.value, key=record.key, headers=headers)
        DEAD_LETTERS.labels(consumer, topic_label(record.topic)).inc()
        log.warning("record dead-lettered", extra={"consumer": consumer, "topic": record.topic,
                                                  "partition": record.partition, "offset": record.offset, "reason": reason})


class RecordProcessor:
    def __init__(self, consumer: str, pool: asyncpg.Pool, dead_letters: DeadLetters, handler: Handler,
                 max_attempts: int = 3, verify: Verifier | None = None, scope: PartitionScope | None = None) -> None:
        self.consumer = consumer
        self.scope = scope
        self._verify = verify
        self._pool = pool
        self._dead_letters = dead_letters
        self._handler = handler
        self._max_attempts = max_attempts

    async def process(self, record: Record) -> str:
        """Returns the outcome: handled, duplicate or dead-letter. Retries transient failures forever."""
        started = time.perf_counter()
        try:
            envelope = self._decode(record)
        except PoisonRecord as exc:
            await self._dead_letters.send(self.consumer, record, str(exc))
            HANDLER_SECONDS.labels(self.consumer, "dead-letter").observe(time.perf_counter() - started)
            return "dead-letter"
        return await self.process_decoded(record, envelope, started)

    async def process_decoded(self, record: Record, envelope: Envelope, started: float | None = None) -> str:
        """`process` for a record already decoded (and verified)."""
        started = time.perf_counter() if started is None else started
        outcome = await self._process_one(record, envelope)
        HANDLER_SECONDS.labels(self.consumer, outcome).observe(time.perf_counter() - started)
        return outcome

    @asynccontextmanager
    async def _transaction(self, record: Record) -> AsyncIterator[tuple[asyncpg.Connection, Any]]:
        """One transaction of the record's partition: (connection, what the handler is given)."""
        scope, context = self.scope, None
        if scope is not None:
            await scope.ready(record.topic, record.partition)
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    if scope is not None:
                        context = await scope.begin(conn, record.topic, record.partition)
                    yield conn, (conn if scope is None else context)
                    if scope is not None:
                        await scope.end(context)
            except BaseException:
                if scope is not None and context is not None:
                    scope.rolled_back(context)
                raise
            if scope is not None:
                scope.committed(context)

    async def process_poll(self, records: list[Record]) -> None:
        """What one poll returned: each partition's records as a batch, in order."""
        by_partition: dict[tuple[str, int], list[Record]] = {}
        for record in records:
            by_partition.setdefault((record.topic, record.partition), []).append(record)
        for batch in by_partition.values():
            await self.process_batch(batch)

    async def close(self) -> None:
        """Nothing is held between polls."""

    async def process_batch(self, records: list[Record]) -> None:
        """Records of one partition, in order, handled in ONE transaction (a commit per batch, not
        per record). A poison record rolls the batch back, is dead-lettered and the rest runs
        again; any other failure rolls it back and every record is then handled alone, so the
        good ones commit and only the bad one is retried or dead-lettered."""
        if len(records) == 1:
            await self.process(records[0])
            return
        started = time.perf_counter()
        decoded: list[tuple[Record, Envelope]] = []
        for record in records:
            try:
                decoded.append((record, self._decode(record)))
            except PoisonRecord as exc:
                await self._dead_letters.send(self.consumer, record, str(exc))
        duplicates = 0
        while decoded:
            duplicates, current = 0, 0
            try:
                async with self._transaction(decoded[0][0]) as (conn, context):
                    # The batch's events claimed in one statement: an id repeated in the batch is
                    # claimed once and handled at its first occurrence.
                    claimed = await self.claim_all(conn, [envelope for _, envelope in decoded])
                    for current, (_, envelope) in enumerate(decoded):
                        if envelope.id in claimed:
                            claimed.discard(envelope.id)
                            await self._handler(context, envelope)
                        else:
                            duplicates += 1
                break
            except RetryBatch as exc:
                log.info("batch run again", extra={"consumer": self.consumer, "reason": str(exc)})
                continue
            except Fenced as exc:
                log.warning("partition taken over: batch not committed", extra={
                    "consumer": self.consumer, "records": len(decoded), "reason": str(exc)})
                return
            except PoisonRecord as exc:
                # Rolled back: dead-letter the culprit and run the rest of the batch again.
                record, _ = decoded.pop(current)
                await self._dead_letters.send(self.consumer, record, str(exc))
            except Exception:
                log.warning("batch failed; handling its records one by one", extra={"consumer": self.consumer,
                                                                                    "records": len(decoded)})
                for record, envelope in decoded:
                    await self.process_decoded(record, envelope)
                return
        DUPLICATES_SKIPPED.labels(self.consumer).inc(duplicates)
        per_record = (time.perf_counter() - started) / max(1, len(decoded))
        for _ in decoded:
            HANDLER_SECONDS.labels(self.consumer, "handled").observe(per_record)

    def _decode(self, record: Record) -> Envelope:
        envelope = unwrap(record.headers, record.value)
        if self._verify is not None:
            self._verify(record, envelope)
        return envelope

    async def claim_all(self, conn: asyncpg.Connection, envelopes: list[Envelope]) -> set[str]:
        """Claims the events not seen before; returns their ids."""
        rows = await conn.fetch(
            "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
            self.consumer, [envelope.id for envelope in envelopes],
        )
        return {row["event_id"] for row in rows}

    async def _claim(self, conn: asyncpg.Connection, envelope: Envelope) -> bool:
        return bool(await conn.fetchval(
            "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
            self.consumer, envelope.id,
        ))

    async def _process_one(self, record: Record, envelope: Envelope) -> str:
        failures = 0
        backoff = 0.1
        while True:
            try:
                async with self._transaction(record) as (conn, context):
                    if not await self._claim(conn, envelope):
                        DUPLICATES_SKIPPED.labels(self.consumer).inc()
                        return "duplicate"
                    await self._handler(context, envelope)
                return "handled"
            except RetryBatch as exc:
                log.info("record run again", extra={"consumer": self.consumer, "reason": str(exc)})
                continue
            except Fenced as exc:
                log.warning("partition taken over: record not committed", extra={
                    "consumer": self.consumer, "reason": str(exc)})
                return "fenced"
            except PoisonRecord as exc:
                await self._dead_letters.send(self.consumer, record, str(exc))
                return "dead-letter"
            except TRANSIENT as exc:
                log.warning("transient failure, retrying", extra={"consumer": self.consumer, "error": repr(exc)})
            except Exception as exc:
                failures += 1
                log.exception("handler failed", extra={"consumer": self.consumer, "attempt": failures})
                if failures >= self._max_attempts:
                    await self._dead_letters.send(self.consumer, record, f"handler failed {failures} times: {exc!r}")
                    return "dead-letter"
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


class ConsumerLoop:
    """A plain aiokafka consumer group subscribed by pattern, driving a RecordProcessor partition by
    partition: the inbound topics, one per sender, created when a sender registers. faust-streaming
    cannot subscribe by pattern (its aiokafka driver passes topic names only: "XXX pattern does not
    work", https://github.com/faust-streaming/faust/issues/62), so this loop stays beside the faust
    streams for them alone.

    At least once: offsets are committed after handling, by a background task (the next poll does
    not wait for the broker's answer); a crash in between redelivers records the inbox skips. A
    partition leaving commits what was handled of it, so its next owner redelivers less."""

    def __init__(self, kafka: KafkaAccess, group_id: str, pattern: str, processor: RecordProcessor,
                 client_id: str | None = None, max_records: int = 200) -> None:
        self._consumer = AIOKafkaConsumer(
            **kafka.options(),
            group_id=group_id,
            client_id=client_id or group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            # A pattern subscription sees a topic created later (a newly registered sender) at
            # the next metadata refresh: seconds, not the default 5 minutes.
            metadata_max_age_ms=PATTERN_REFRESH_MS,
        )
        self._pattern = pattern
        self._group = group_id
        self._processor = processor
        self._max_records = max_records
        init_consumer(processor.consumer, group_id, [])
        self._lag: dict[TopicPartition, int] = {}
        self._to_commit: dict[TopicPartition, int] = {}  # the next offset of each partition, handled
        self._commit_wanted = asyncio.Event()
        self.started = asyncio.Event()

    @property
    def consumer(self) -> str:
        return self._processor.consumer

    async def run(self) -> None:
        committer = asyncio.create_task(self._commit_forever(), name=f"{self._group}-offsets")
        try:
            # Inside the try: a service stopped while its consumer starts (a test's short-lived app)
            # would otherwise leave that consumer in its group, heartbeating, with nobody to stop it.
            await self._consumer.start()
            self._consumer.subscribe(pattern=self._pattern, listener=_CommitOnRevoke(self))
            self.started.set()
            while True:
                batches = await self._consumer.getmany(timeout_ms=500, max_records=self._max_records)
                if not batches:
                    continue
                await self._processor.process_poll([Record(r.topic, r.partition, r.offset, r.key, r.value,
                                                           list(r.headers or ())) for rs in batches.values() for r in rs])
                # A partition revoked while its records were handled is its next owner's now: its
                # offsets are not ours to commit, and aiokafka no longer answers for it.
                assigned = self._consumer.assignment()
                for tp, rs in batches.items():
                    if tp not in assigned:
                        self._lag.pop(tp, None)
                        continue
                    self._to_commit[tp] = rs[-1].offset + 1
                    self._lag[tp] = max(0, (self._consumer.highwater(tp) or 0) - rs[-1].offset - 1)
                    label = topic_label(tp.topic)
                    CONSUMER_LAG.labels(self._group, label).set(
                        sum(lag for other, lag in self._lag.items() if topic_label(other.topic) == label))
                self._commit_wanted.set()
        finally:
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            # What was handled is committed (the rest will be redelivered and deduplicated), then
            # the consumer leaves its group. Bounded: during a rebalance the commit waits for the
            # group, which waits for this very member, and the consumer stayed in its group for
            # minutes after its service had stopped.
            try:
                await asyncio.wait_for(self._commit_pending("final offset commit failed; records will be redelivered"),
                                       FINAL_COMMIT_SECONDS)
            except TimeoutError:
                log.warning("final offset commit timed out; records will be redelivered",
                            extra={"consumer": self.consumer})
            await self._consumer.stop()

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
    def __init__(self, loop: ConsumerLoop) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked) -> None:
        await self._loop._commit_pending("offset commit on revocation failed; records will be redelivered",
                                         only=set(revoked))

    async def on_partitions_assigned(self, assigned) -> None:
        pass
