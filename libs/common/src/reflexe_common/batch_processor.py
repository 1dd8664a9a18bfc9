"""A processor that handles what each poll returned as one batch, in one PostgreSQL transaction,
whatever the records' partitions and topics.

For consumers whose handler can route many events in memory and write them with a few
statements (notify): a batch costs a handful of round trips whatever its size, and the batch is
what the stream had pending, so a lone event goes alone and at once.

At least once, as RecordProcessor, which a faust stream drives the same way: the inbox claim of
every event and its effects commit together, then the offsets are committed. A poison record is
dead-lettered before the transaction; when the batch fails otherwise, its records are handled one
by one by the RecordProcessor, so the good ones commit and only the bad one is retried or
dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from reflexe_common.envelope import Envelope, PoisonRecord, unwrap
from reflexe_common.inbox import TRANSIENT, DeadLetters, Record, RecordProcessor
from reflexe_common.metrics import DUPLICATES_SKIPPED, HANDLER_SECONDS

log = logging.getLogger(__name__)

# Runs in the batch's transaction; what it returns is handed to `after_commit` once committed.
BatchHandler = Callable[[asyncpg.Connection, Sequence[Envelope]], Awaitable[Any]]


class BatchProcessor:
    scope = None  # no partition state: any batch may mix partitions

    def __init__(self, pool: asyncpg.Pool, dead_letters: DeadLetters, processor: RecordProcessor,
                 handle_batch: BatchHandler, after_commit: Callable[[Any], None] | None = None) -> None:
        """`processor` handles records one by one when a batch fails (its handler must do for one
        event what `handle_batch` does for many, with the same consumer name and no verifier)."""
        self.consumer = processor.consumer
        self._pool = pool
        self._dead_letters = dead_letters
        self._processor = processor
        self._handle_batch = handle_batch
        self._after_commit = after_commit
        # One connection of the pool held from batch to batch: no acquiring and resetting per batch.
        self._conn: asyncpg.Connection | None = None

    async def process_poll(self, records: list[Record]) -> None:
        self._conn = await self._handle(records, self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            await self._pool.release(self._conn)
            self._conn = None

    async def _handle(self, records: list[Record], conn: asyncpg.Connection | None) -> asyncpg.Connection | None:
        """Handles the records; returns the connection to keep (None after losing it)."""
        started = time.perf_counter()
        decoded: list[tuple[Record, Envelope]] = []
        for record in records:
            try:
                decoded.append((record, unwrap(record.headers, record.value)))
            except PoisonRecord as exc:
                await self._dead_letters.send(self.consumer, record, str(exc))
        if not decoded:
            return conn
        envelopes = [envelope for _, envelope in decoded]
        backoff = 0.1
        while True:
            try:
                if conn is None:
                    conn = await self._pool.acquire()
                async with conn.transaction():
                    claimed = await self._processor.claim_all(conn, envelopes)
                    fresh = []
                    for envelope in envelopes:  # an id repeated in the batch: its first occurrence
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
                            extra={"consumer": self.consumer, "records": len(decoded)})
                if conn is not None and conn.is_closed():
                    conn = await self._drop(conn)
                for record, envelope in decoded:  # the poison ones are dead-lettered already
                    await self._processor.process_decoded(record, envelope)
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
