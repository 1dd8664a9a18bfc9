"""Retention: the platform's bookkeeping tables would otherwise grow forever. A background job in
each service deletes, by age, oldest first and in small batches (short transactions, no long
lock on a table the relay or the consumers write):

- published outbox rows (never an unpublished one: it has yet to reach Kafka), and the relay's
  settled batch journal (never a batch still SENDING: recovery needs it);
- processed inbox rows. The inbox is what makes a redelivery harmless, so its age must stay
  well above the topics' retention (a record older than the inbox's age can no longer be
  redelivered);
- in notify, the attempts of deliveries that are settled (never those of a PENDING delivery).

Never the audit trail (append-only; the database refuses it anyway). One replica purges a
schema at a time (a PostgreSQL advisory lock per run); the others skip that run.

Settings (environment): RETENTION_PERIOD_SECONDS, RETENTION_OUTBOX_DAYS, RETENTION_INBOX_DAYS,
RETENTION_DELIVERY_ATTEMPTS_DAYS, RETENTION_BATCH_SIZE.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import Counter
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

_LOCK_NAMESPACE = 7_263_005
TABLES = ("outbox", "outbox_batches", "inbox", "delivery_attempts")
PURGED = Counter("reflexe_retention_purged_rows_total", "Rows deleted by the retention job, by table.", ["table"])
for _table in TABLES:
    PURGED.labels(_table)


class RetentionSettings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    period_seconds: float = Field(3600, gt=0, validation_alias="RETENTION_PERIOD_SECONDS")
    outbox_days: float = Field(7, gt=0, validation_alias="RETENTION_OUTBOX_DAYS")
    # Above the topics' retention (7 days by default): see the module's docstring.
    inbox_days: float = Field(30, gt=0, validation_alias="RETENTION_INBOX_DAYS")
    delivery_attempts_days: float = Field(90, gt=0, validation_alias="RETENTION_DELIVERY_ATTEMPTS_DAYS")
    batch_size: int = Field(1000, ge=1, le=100_000, validation_alias="RETENTION_BATCH_SIZE")


@dataclass(frozen=True)
class Purge:
    """One table's rule: `doomed` selects (ctid) at most $2 rows older than the cutoff $1."""

    table: str
    doomed: str
    age: timedelta


def platform_purges(settings: RetentionSettings) -> list[Purge]:
    outbox, inbox = timedelta(days=settings.outbox_days), timedelta(days=settings.inbox_days)
    return [
        Purge("outbox", "SELECT ctid FROM outbox WHERE published_at IS NOT NULL AND published_at < $1 "
                        "ORDER BY published_at LIMIT $2", outbox),
        Purge("outbox_batches", "SELECT ctid FROM outbox_batches WHERE state <> 'SENDING' AND created_at < $1 "
                                "ORDER BY created_at LIMIT $2", outbox),
        Purge("inbox", "SELECT ctid FROM inbox WHERE processed_at < $1 ORDER BY processed_at LIMIT $2", inbox),
    ]


def delivery_attempts_purge(settings: RetentionSettings) -> Purge:
    """notify: attempts of deliveries no longer PENDING (delivered or failed for good)."""
    return Purge("delivery_attempts",
                 "SELECT a.ctid FROM delivery_attempts a JOIN deliveries d USING (webhook_id) "
                 "WHERE a.started_at < $1 AND d.status <> 'PENDING' ORDER BY a.started_at LIMIT $2",
                 timedelta(days=settings.delivery_attempts_days))


class RetentionJob:
    def __init__(self, pool: asyncpg.Pool, schema: str, purges: list[Purge], settings: RetentionSettings) -> None:
        assert all(p.table in TABLES for p in purges), "the metric's table label is a fixed set"
        self._pool = pool
        self._schema = schema
        self._purges = purges
        self._settings = settings

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention run failed; next run at the next period", extra={"schema": self._schema})
            await asyncio.sleep(self._settings.period_seconds)

    async def run_once(self, now: datetime | None = None) -> dict[str, int] | None:
        """Purge every table down to its age; None when another replica is purging this schema."""
        now = now or datetime.now(UTC)
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE, self._schema):
                return None
            try:
                purged = {p.table: await self._purge(conn, p, now - p.age) for p in self._purges}
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", _LOCK_NAMESPACE, self._schema)
        if any(purged.values()):
            log.info("retention purged rows", extra={"schema": self._schema, "purged": purged})
        return purged

    async def _purge(self, conn: asyncpg.Connection, purge: Purge, cutoff: datetime) -> int:
        total = 0
        while True:
            status = await conn.execute(
                f"DELETE FROM {purge.table} WHERE ctid = ANY(ARRAY({purge.doomed}))", cutoff, self._settings.batch_size)
            deleted = int(status.split()[-1])
            total += deleted
            PURGED.labels(purge.table).inc(deleted)
            if deleted < self._settings.batch_size:
                return total
            await asyncio.sleep(0)  # let the service's own queries in between batches


def start_retention(pool: asyncpg.Pool, schema: str, start, extra: list[Purge] | None = None,
                    settings: RetentionSettings | None = None) -> RetentionJob:
    """Wiring for a service: the platform tables' rules plus its own, as a background task."""
    settings = settings or RetentionSettings()
    job = RetentionJob(pool, schema, platform_purges(settings) + list(extra or []), settings)
    start(f"{schema}-retention", job.run())
    return job
