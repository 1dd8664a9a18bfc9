"""Transactional outbox and its relay: an event is stored in the same transaction as the state
change that caused it, then published to Kafka exactly once, even across crashes.

Exactly once, because the relay publishes a batch inside a Kafka transaction and journals,
before committing it, where the batch's first record landed. After a crash the journal says
which batch was in flight; the restarted relay (whose producer has fenced the dead one's
transaction) reads that offset with read_committed: visible → the batch was published, mark it;
invisible → it was aborted, send it again. A single relay runs per service schema (a
PostgreSQL advisory lock elects it) and every instance shares one transactional id, so a
zombie leader is fenced by Kafka itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from reflexe_common.envelope import Envelope
from reflexe_common.kafka import KafkaAccess
from reflexe_common.metrics import OUTBOX_BACKLOG, OUTBOX_PUBLISH_SECONDS, OUTBOX_PUBLISHED
from reflexe_common.partitioning import DepartmentPartitioner

log = logging.getLogger(__name__)

BATCH_HEADER = "reflexe-outbox-batch"
_LEADER_LOCK_NAMESPACE = 7_263_002


def outbox_transactional_id(schema: str) -> str:
    """The relay's Kafka transactional id, shared by every instance (see above); its ACL is
    declared in kafka_acls.py."""
    return f"reflexe-{schema}-outbox-relay"


def outbox_headers(envelope: Envelope) -> str:
    """An event's headers as the outbox stores them (jsonb: pairs of name and text)."""
    return json.dumps([[k, v.decode()] for k, v in envelope.headers()])


async def enqueue(conn: asyncpg.Connection, topic: str, key: str, envelope: Envelope) -> None:
    """Store an event for publication; call inside the transaction that changes the state."""
    await conn.execute(
        "INSERT INTO outbox (event_id, topic, key, headers, payload) VALUES ($1, $2, $3, $4, $5)",
        uuid.UUID(envelope.id),
        topic,
        key,
        outbox_headers(envelope),
        envelope.value(),
    )  # a trigger notifies the relay at commit (sql/000_platform_tables.sql)


def enqueue_many_sql(ids: str, topics: str, keys: str, headers: str, payloads: str) -> str:
    """The statement storing events for publication, in the order of the arrays given (SQL
    expressions: parameters), for a caller that writes them in a statement of its own."""
    return ("INSERT INTO outbox (event_id, topic, key, headers, payload) "
            "SELECT event_id, topic, key, headers, payload "
            f"FROM unnest({ids}::uuid[], {topics}::text[], {keys}::text[], {headers}::jsonb[], {payloads}::bytea[]) "
            "WITH ORDINALITY AS e(event_id, topic, key, headers, payload, n) ORDER BY n")


async def enqueue_many(conn: asyncpg.Connection, events: list[tuple[str, str, Envelope]]) -> None:
    """Store several events (topic, key, envelope) for publication in one statement, in order."""
    await conn.execute(
        enqueue_many_sql("$1", "$2", "$3", "$4", "$5"),
        [uuid.UUID(e.id) for _, _, e in events],
        [topic for topic, _, _ in events],
        [key for _, key, _ in events],
        [outbox_headers(e) for _, _, e in events],
        [e.value() for _, _, e in events],
    )


Db = asyncpg.Pool | asyncpg.Connection  # the leader's session; a pool in the tests that drive one step


@dataclass(frozen=True)
class _Row:
    id: int
    topic: str
    key: str
    headers: list[tuple[str, bytes]]
    payload: bytes
    created_at: float


class OutboxRelay:
    def __init__(
        self,
        database_url: str,
        schema: str,
        kafka: KafkaAccess,
        batch_size: int = 500,
        idle_poll_seconds: float = 5.0,  # a fallback only: commits wake the relay (NOTIFY)
    ) -> None:
        self._database_url = database_url
        self._schema = schema
        self._kafka = kafka
        self._batch_size = batch_size
        self._idle_poll = idle_poll_seconds
        self._wake = asyncio.Event()
        self.is_leader = False

    async def run(self) -> None:
        """Relay until cancelled; waits for leadership, survives broker and database outages."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox relay failed; restarting", extra={"schema": self._schema})
                self.is_leader = False
                await asyncio.sleep(1.0)

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self._database_url, server_settings={"search_path": self._schema})
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LEADER_LOCK_NAMESPACE, self._schema):
                await asyncio.sleep(2.0)
            await conn.add_listener(f"outbox_{self._schema}", lambda *_: self._wake.set())
            producer = AIOKafkaProducer(
                **self._kafka.options(),
                transactional_id=outbox_transactional_id(self._schema),
                enable_idempotence=True,
                acks="all",
                linger_ms=1,
                partitioner=DepartmentPartitioner(),
                # Back-to-back transactions meet CONCURRENT_TRANSACTIONS while the previous commit
                # markers are written; the default 100 ms backoff would then pace every batch.
                retry_backoff_ms=5,
            )
            await producer.start()
            try:
                self.is_leader = True
                await self._recover(conn)
                await self._relay(producer, conn)
            finally:
                self.is_leader = False
                await producer.stop()
        finally:
            await conn.close()

    async def _relay(self, producer: AIOKafkaProducer, leader_conn: asyncpg.Connection) -> None:
        """Every statement goes through the leader's own session: no pool acquire and release (and
        its reset statement) per batch, and a relay whose session, hence leadership, is gone stops
        at its next statement."""
        last_backlog_check = 0.0
        while True:
            self._wake.clear()
            rows = await self._next_batch(leader_conn)
            if rows:
                await self._publish(producer, rows, leader_conn)
                continue
            if time.monotonic() - last_backlog_check > 5:
                OUTBOX_BACKLOG.labels(self._schema).set(0)
                last_backlog_check = time.monotonic()
            try:
                await asyncio.wait_for(self._wake.wait(), self._idle_poll)
            except TimeoutError:
                pass

    async def _next_batch(self, db: Db) -> list[_Row]:
        records = await db.fetch(
            "SELECT id, topic, key, headers, payload, extract(epoch FROM created_at) AS created "
            "FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
            self._batch_size,
        )
        if len(records) == self._batch_size:
            OUTBOX_BACKLOG.labels(self._schema).set(
                await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            )
        return [
            _Row(r["id"], r["topic"], r["key"], [(k, v.encode()) for k, v in json.loads(r["headers"])], r["payload"], float(r["created"]))
            for r in records
        ]

    async def _publish(self, producer: AIOKafkaProducer, rows: list[_Row], db: Db) -> None:
        batch_id = str(uuid.uuid4())
        # Leaving the block commits the Kafka transaction; an exception inside it aborts it.
        async with producer.transaction():
            pending = [
                await producer.send(
                    r.topic, r.payload, key=r.key.encode(), headers=[*r.headers, (BATCH_HEADER, batch_id.encode())]
                )
                for r in rows
            ]
            first = await pending[0]
            await asyncio.gather(*pending[1:])
            await db.execute(
                "INSERT INTO outbox_batches (batch_id, outbox_ids, probe_topic, probe_partition, probe_offset, state) "
                "VALUES ($1, $2, $3, $4, $5, 'SENDING')",
                uuid.UUID(batch_id), [r.id for r in rows], first.topic, first.partition, first.offset,
            )
        await self._mark(db, batch_id, [r.id for r in rows], "DONE")
        now = time.time()
        for r in rows:
            OUTBOX_PUBLISH_SECONDS.labels(self._schema).observe(max(0.0, now - r.created_at))
        OUTBOX_PUBLISHED.labels(self._schema).inc(len(rows))

    async def _mark(self, db: Db, batch_id: str, ids: list[int], state: str) -> None:
        # One statement, atomic alone (a data-modifying WITH always runs): no BEGIN/COMMIT round
        # trips between a batch and the next.
        await db.execute(
            "WITH journal AS (UPDATE outbox_batches SET state = $2 WHERE batch_id = $1) "
            "UPDATE outbox SET published_at = now() WHERE $2 = 'DONE' AND id = ANY($3) AND published_at IS NULL",
            uuid.UUID(batch_id), state, ids,
        )

    async def _recover(self, db: Db) -> None:
        """Settle the batches a crashed relay left in flight (our producer has fenced them)."""
        for b in await db.fetch("SELECT * FROM outbox_batches WHERE state = 'SENDING' ORDER BY created_at"):
            batch_id = str(b["batch_id"])
            visible = await self._committed(b["probe_topic"], b["probe_partition"], b["probe_offset"], batch_id)
            await self._mark(db, batch_id, list(b["outbox_ids"]), "DONE" if visible else "ABORTED")
            log.warning("recovered outbox batch", extra={"batch": batch_id, "published": visible, "events": len(b["outbox_ids"])})

    async def _committed(self, topic: str, partition: int, offset: int, batch_id: str) -> bool:
        tp = TopicPartition(topic, partition)
        consumer = AIOKafkaConsumer(**self._kafka.options(), isolation_level="read_committed", enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            end = (await consumer.end_offsets([tp]))[tp]  # last stable offset under read_committed
            if offset >= end:
                return False
            consumer.seek(tp, offset)
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for record in batch.get(tp, []):
                    if record.offset > offset:
                        return False
                    if record.offset == offset:
                        return dict(record.headers).get(BATCH_HEADER, b"").decode() == batch_id
            return False
        finally:
            await consumer.stop()
