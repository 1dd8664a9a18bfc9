"""The matcher as the single writer of its partitions: the ledgers of the HADs serving the
departments of the partitions it owns, kept in memory, and the fencing epoch of each partition.

- On assignment, one transaction bumps the partitions' epochs (``partition_epochs``) and then
  loads the ledgers of every HAD serving their departments (one query each). The bump waits for
  a batch of the previous owner still holding the epoch row, so the load sees what it committed.
- Each batch opens with one statement that takes its partition's epoch row FOR SHARE (held until
  the commit: a new owner's bump waits for it) and returns the ledgers or registry rows of the
  partition's HADs changed by others since they were loaded (a declaration through the REST
  door of any process, an HAD serving a department of another partition). A bumped epoch
  refuses the batch (``Fenced``): it rolls back, its offsets are not committed, the new owner
  handles its records.
- Decisions read the memory; writes stay conditional on the ledger's version (a ledger changed
  in between fails the write and is read again). What a batch wrote replaces the memory once it
  committed; a rolled-back batch leaves the memory as it was, which is what PostgreSQL holds.
- On revocation the partition's ledgers are dropped.

Ledgers are kept per HAD (an HAD serving two departments of owned partitions is kept once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from reflexe_capacity.adapters.store import _had, _ledger
from reflexe_capacity.domain.capacity import HadLedger
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_capacity.service_layer.unit_of_work import PostgresUnitOfWork
from reflexe_common.inbox import TRANSIENT, Fenced
from reflexe_common.partition_table import DEPARTMENT_PARTITION

# How long a record may wait for the taking of its partition to begin before its batch is refused.
# Once begun, the taking is waited for however long it lasts (it is retried while PostgreSQL is
# away): a batch refused then would be acknowledged, and committed, by the partition's owner.
TAKING_SECONDS = 30.0

log = logging.getLogger(__name__)


def departments_of(partition: int) -> frozenset[str]:
    return frozenset(d for d, p in DEPARTMENT_PARTITION.items() if p == partition)


@dataclass
class _Entry:
    had: HadEstablishment
    ledger: HadLedger
    updated_at: datetime  # the registry row's, to see it changed


@dataclass
class _Partition:
    epoch: int
    departments: frozenset[str]


@dataclass
class BatchContext:
    """What one batch of a partition is given: its unit of work."""

    partition: int
    epoch: int
    uow: PostgresUnitOfWork = field(repr=False)


_BUMP = ("INSERT INTO partition_epochs (topic, partition, epoch) SELECT $1, p, 1 FROM unnest($2::int[]) p "
         "ON CONFLICT (topic, partition) DO UPDATE SET epoch = partition_epochs.epoch + 1 RETURNING partition, epoch")
_LOAD = ("SELECT hads.*, ledgers.* FROM hads JOIN ledgers ON had_finess = finess "
         "WHERE departments && $1 ORDER BY finess")
# The epoch, locked until the commit, with the partition's HADs whose ledger or registry row
# differs from what the memory holds (or that it does not hold): usually the epoch alone.
_BEGIN = ("SELECT e.epoch, c.* FROM partition_epochs e LEFT JOIN LATERAL ("
          " SELECT hads.*, ledgers.* FROM hads JOIN ledgers ON had_finess = hads.finess"
          " LEFT JOIN unnest($3::text[], $4::bigint[], $5::timestamptz[]) AS known(finess, version, updated_at)"
          " ON known.finess = hads.finess"
          " WHERE hads.departments && $6 AND (known.finess IS NULL OR known.version <> ledgers.version"
          " OR known.updated_at <> hads.updated_at)) c ON true "
          "WHERE e.topic = $1 AND e.partition = $2 FOR SHARE OF e")


class OwnedLedgers:
    """The matcher's inbox.PartitionScope: memory of the owned partitions' ledgers, and fencing."""

    def __init__(self, pool: asyncpg.Pool, taking_seconds: float = TAKING_SECONDS) -> None:
        self._pool = pool
        self._taking_seconds = taking_seconds
        self._partitions: dict[int, _Partition] = {}
        self._taking: set[int] = set()  # partitions whose taking has begun, not ended
        self._entries: dict[str, _Entry] = {}
        self._departments: frozenset[str] = frozenset()
        self._takings = asyncio.Condition()  # notified when a taking begins and when it ends

    # ---- what the unit of work reads -------------------------------------------------------
    def serving(self, departments: list[str]) -> list[tuple[HadEstablishment, HadLedger]]:
        """The HADs serving one of the departments with their ledgers, FINESS order (as the store)."""
        wanted = set(departments)
        return [(e.had, e.ledger) for finess, e in sorted(self._entries.items()) if e.had.departments & wanted]

    def get(self, finess: str) -> tuple[HadEstablishment, HadLedger] | None:
        entry = self._entries.get(finess)
        return None if entry is None else (entry.had, entry.ledger)

    def partitions(self) -> dict[int, int]:
        """Owned partition → its epoch."""
        return {p: state.epoch for p, state in self._partitions.items()}

    # ---- rebalances ------------------------------------------------------------------------
    async def assigned(self, topic: str, partitions: set[int]) -> None:
        taken = sorted(p for p in partitions if p not in self._partitions)
        if not taken:
            return
        departments = frozenset().union(*(departments_of(p) for p in taken))
        await self._notify(lambda: self._taking.update(taken))
        try:
            epochs, rows = await self._take(topic, taken, departments)
            for row in rows:
                self._remember(row)
            for p in taken:
                self._partitions[p] = _Partition(epochs[p], departments_of(p))
            self._departments = frozenset().union(*(s.departments for s in self._partitions.values()))
        finally:
            await self._notify(lambda: self._taking.difference_update(taken))
        log.info("partitions taken", extra={"topic": topic, "partitions": taken, "hads": len(rows)})

    async def _take(self, topic: str, taken: list[int],
                    departments: frozenset[str]) -> tuple[dict[int, int], list[asyncpg.Record]]:
        backoff = 0.1
        while True:
            # Retried until PostgreSQL answers: until then this process has no state for these
            # partitions, and its batches for them wait.
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    epochs = {r["partition"]: r["epoch"] for r in await conn.fetch(_BUMP, topic, taken)}
                    return epochs, await conn.fetch(_LOAD, sorted(departments))
            except TRANSIENT as exc:
                log.warning("taking partitions failed, retrying", extra={"partitions": taken, "error": repr(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _notify(self, change: Callable[[], object]) -> None:
        async with self._takings:
            change()
            self._takings.notify_all()

    async def ready(self, topic: str, partition: int) -> None:
        """See PartitionScope.ready: waits, a bounded time, for the taking of the partition to
        begin, then for as long as it lasts."""
        if partition in self._partitions:
            return
        async with self._takings:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._takings.wait_for(lambda: partition in self._partitions or partition in self._taking),
                    self._taking_seconds)
            await self._takings.wait_for(lambda: partition in self._partitions or partition not in self._taking)

    def revoked(self, topic: str, partitions: set[int]) -> None:
        for p in partitions:
            self._partitions.pop(p, None)
        self._departments = frozenset().union(*(s.departments for s in self._partitions.values()))
        self._entries = {f: e for f, e in self._entries.items() if e.had.departments & self._departments}

    # ---- batches ---------------------------------------------------------------------------
    async def begin(self, conn: asyncpg.Connection, topic: str, partition: int) -> BatchContext:
        state = self._partitions.get(partition)
        if state is None:
            raise Fenced(f"{topic}[{partition}] is not assigned to this process")
        known = [(f, e) for f, e in self._entries.items() if e.had.departments & state.departments]
        rows = await conn.fetch(_BEGIN, topic, partition, [f for f, _ in known],
                                [e.ledger.version for _, e in known], [e.updated_at for _, e in known],
                                sorted(state.departments))
        if not rows or rows[0]["epoch"] != state.epoch:
            raise Fenced(f"{topic}[{partition}]: epoch {rows[0]['epoch'] if rows else None}, "
                         f"this process took it at {state.epoch}")
        for row in rows:
            if row["finess"] is not None:
                self._remember(row)
        return BatchContext(partition, state.epoch,
                            PostgresUnitOfWork(conn, self, batched=True, partition_departments=state.departments))

    async def end(self, context: BatchContext) -> None:
        await context.uow.flush()

    def committed(self, context: BatchContext) -> None:
        for finess, ledger in context.uow.written.items():
            entry = self._entries.get(finess)
            if entry is not None and ledger.version >= entry.ledger.version:
                entry.ledger = ledger

    def rolled_back(self, context: BatchContext) -> None:
        """Nothing to undo: the memory only ever takes what committed."""

    def _remember(self, row: asyncpg.Record) -> None:
        self._entries[row["finess"]] = _Entry(_had(row), _ledger(row), row["updated_at"])


__all__ = ["BatchContext", "OwnedLedgers", "departments_of"]
