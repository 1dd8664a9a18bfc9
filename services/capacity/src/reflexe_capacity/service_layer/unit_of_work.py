"""The unit of work the capacity commands run in (cosmicpython style): what a command reads and
writes (registry, ledgers, holds, match requests) and the events it publishes, all in one
transaction. The matcher and the declaration command know only this interface, so unit tests drive
them with an in-memory fake (tests/unit/capacity/fakes.py), and every door (REST, FHIR, Kafka)
reaches the same command through it.

``PostgresUnitOfWork`` reads and writes PostgreSQL through ``CapacityStore``. Given the matcher's
``OwnedLedgers`` (the ledgers of the partitions this process owns, kept in memory), it reads
ledgers from memory instead; writes stay conditional on the ledger's version, so a ledger changed
elsewhere fails the write, is read again from PostgreSQL and the command decides again. What it
wrote reaches the memory only once the transaction committed.

In a matcher's batch the new holds at an HAD serving only the partition's departments (no other
matcher writes its ledger) are not written one by one: they are kept, with their ledgers'
counts, until the batch ends or a command reads or writes holds or match requests, and
then written in one statement, conditional on the version each ledger had when the batch first
changed it. A ledger changed elsewhere in between refuses the whole batch (``RetryBatch``): it
rolls back and runs again on fresh ledgers. An HAD serving departments of other partitions too
is written at once, so that a decision meeting another owner's is made again alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from reflexe_capacity.adapters.store import CapacityStore
from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger, Hold
from reflexe_capacity.domain.registry import HadEstablishment
from reflexe_common.envelope import Envelope
from reflexe_common.inbox import RetryBatch
from reflexe_common.outbox import enqueue_many

if TYPE_CHECKING:
    from reflexe_capacity.adapters.owned_ledgers import OwnedLedgers

Board = tuple[HadEstablishment, HadLedger]
Event = tuple[str, str, Envelope]  # topic, key, envelope


class UnitOfWork(Protocol):
    """What a capacity command may do; everything happens in one transaction."""

    async def candidates(self, departments: list[str]) -> list[Board]: ...

    async def had_with_ledger(self, finess: str) -> Board | None: ...

    async def hold_with_ledger(self, hold_id: str) -> Board | None: ...

    async def save_ledger(self, ledger: HadLedger, read_version: int) -> bool: ...

    async def save_new_hold(self, ledger: HadLedger, read_version: int, hold: Hold, department: str,
                            by_desk: bool) -> bool: ...

    async def save_hold_change(self, ledger: HadLedger, read_version: int, hold: Hold, at: datetime,
                               answered: bool) -> bool: ...

    async def save_declaration(self, declaration: CapacityDeclaration, channel: str) -> bool: ...

    async def holding_holds_of_referral(self, referral_id: str) -> list[Any]: ...

    async def save_match_request(self, referral_id: str, department: str, request: bytes) -> Any | None: ...

    async def lock_match_request(self, referral_id: str) -> Any | None: ...

    async def update_match_request(self, referral_id: str, *, tried: str | None = None,
                                   departments: list[str] | None = None, open: bool | None = None) -> None: ...

    async def publish(self, events: Iterable[Event]) -> None:
        """Events to publish if, and only if, the transaction commits (the outbox)."""


def _copy(ledger: HadLedger) -> HadLedger:
    """A ledger the command may change without touching the one kept in memory."""
    return dataclasses.replace(ledger, holds=list(ledger.holds))


class PostgresUnitOfWork:
    """The unit of work on a connection already in a transaction (the caller commits).

    ``owned``: the matcher's in-memory ledgers (None: every read goes to PostgreSQL, as for the
    REST and declarations doors). ``batched``: events are kept until ``flush`` (one outbox
    statement per batch) instead of written at each ``publish``."""

    def __init__(self, conn: asyncpg.Connection, owned: OwnedLedgers | None = None, batched: bool = False,
                 partition_departments: frozenset[str] = frozenset()) -> None:
        self.conn = conn
        self.store = CapacityStore(conn)
        self.owned = owned
        self._batched = batched
        self._partition_departments = partition_departments
        self._events: list[Event] = []
        # Ledgers as this transaction wrote them (or read them again after a lost write): they
        # override the memory for the rest of the transaction and replace it once committed.
        self.written: dict[str, HadLedger] = {}
        # New holds not written yet (batched only): each HAD's ledger with the version it had
        # before the first of them, and the holds in the order they were placed.
        self._unwritten_ledgers: dict[str, tuple[int, HadLedger]] = {}
        self._unwritten_holds: list[tuple[Hold, str, bool]] = []

    # ---- ledgers ---------------------------------------------------------------------------
    async def candidates(self, departments: list[str]) -> list[Board]:
        # The memory is trusted for the batch's own partition only: its opening statement
        # refreshed the HADs of that partition's departments, not those of the others.
        if self.owned is not None and departments and self._partition_departments.issuperset(departments):
            return [(had, _copy(self.written.get(had.finess, ledger)))
                    for had, ledger in self.owned.serving(departments)]
        await self._write_holds()
        return await self.store.candidates(departments)

    async def had_with_ledger(self, finess: str) -> Board | None:
        found = self.owned.get(finess) if self.owned is not None else None
        if found is None or not found[0].departments & self._partition_departments:
            await self._write_holds()
            return await self.store.had_with_ledger(finess)
        had, ledger = found
        return had, _copy(self.written.get(finess, ledger))

    async def hold_with_ledger(self, hold_id: str) -> Board | None:
        # The hold's row is read anyway; its ledger comes with it, as this transaction sees it.
        await self._write_holds()
        return await self.store.hold_with_ledger(hold_id)

    async def save_ledger(self, ledger: HadLedger, read_version: int) -> bool:
        await self._write_holds()
        return await self._saved(ledger, await self.store.save_ledger(ledger, read_version))

    async def save_new_hold(self, ledger: HadLedger, read_version: int, hold: Hold, department: str,
                            by_desk: bool) -> bool:
        if self._batched and self._sole_writer(ledger.had_finess):
            first_read = self._unwritten_ledgers.get(ledger.had_finess, (read_version, ledger))[0]
            self._unwritten_ledgers[ledger.had_finess] = (first_read, dataclasses.replace(ledger, holds=[]))
            self._unwritten_holds.append((hold, department, by_desk))
            self.written[ledger.had_finess] = dataclasses.replace(ledger, holds=[])
            return True
        return await self._saved(ledger, await self.store.save_new_hold(ledger, read_version, hold, department, by_desk))

    async def save_hold_change(self, ledger: HadLedger, read_version: int, hold: Hold, at: datetime,
                               answered: bool) -> bool:
        await self._write_holds()
        return await self._saved(ledger, await self.store.save_hold_change(ledger, read_version, hold, at, answered))

    def _sole_writer(self, finess: str) -> bool:
        """Whether only this partition's owner places holds at the HAD (it serves no other's departments)."""
        found = self.owned.get(finess) if self.owned is not None else None
        return found is not None and found[0].departments <= self._partition_departments

    async def _write_holds(self) -> None:
        """Writes the new holds kept so far; RetryBatch when a ledger changed since it was read."""
        if not self._unwritten_holds:
            return
        ledgers, self._unwritten_ledgers = self._unwritten_ledgers, {}
        holds, self._unwritten_holds = self._unwritten_holds, []
        if not await self.store.save_new_holds([(read, ledger) for read, ledger in ledgers.values()], holds):
            raise RetryBatch("an HAD's ledger changed during the batch")

    async def _saved(self, ledger: HadLedger, saved: bool) -> bool:
        if saved:
            self.written[ledger.had_finess] = dataclasses.replace(ledger, holds=[])
        elif self.owned is not None:
            # Changed elsewhere (a declaration through another process, an HAD of two departments
            # decided on by another partition's owner): what the memory holds is stale.
            fresh = await self.store.had_with_ledger(ledger.had_finess)
            if fresh is not None:
                self.written[ledger.had_finess] = fresh[1]
        return saved

    # ---- the rest goes straight to the store ----------------------------------------------
    async def save_declaration(self, declaration: CapacityDeclaration, channel: str) -> bool:
        await self._write_holds()
        return await self.store.save_declaration(declaration, channel)

    async def holding_holds_of_referral(self, referral_id: str) -> list[Any]:
        await self._write_holds()
        return await self.store.holding_holds_of_referral(referral_id)

    async def save_match_request(self, referral_id: str, department: str, request: bytes) -> Any | None:
        return await self.store.save_match_request(referral_id, department, request)

    async def lock_match_request(self, referral_id: str) -> Any | None:
        await self._write_holds()
        return await self.store.lock_match_request(referral_id)

    async def update_match_request(self, referral_id: str, *, tried: str | None = None,
                                   departments: list[str] | None = None, open: bool | None = None) -> None:
        await self._write_holds()
        await self.store.update_match_request(referral_id, tried=tried, departments=departments, open=open)

    # ---- events ----------------------------------------------------------------------------
    async def publish(self, events: Iterable[Event]) -> None:
        self._events.extend(events)
        if not self._batched:
            await self.flush()

    async def flush(self) -> None:
        """Writes the new holds kept so far, then the pending events to the outbox, in order, in
        one statement. Each HAD's ledger row stays locked by its write until the commit, so the
        outbox order is still the order in which the HADs' changes commit."""
        await self._write_holds()
        if self._events:
            events, self._events = self._events, []
            await enqueue_many(self.conn, events)


__all__ = ["Board", "Event", "PostgresUnitOfWork", "UnitOfWork"]
