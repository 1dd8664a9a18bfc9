"""The unit of work a referral command runs in: the referrals it reads and writes, committed
together with their events (the outbox) or not at all.

A command takes a UnitOfWork and knows nothing of the door it came through: the HTTP doors open a
PostgresUnitOfWork of their own; the Kafka consumers run the command in the idempotent
consumer's transaction (ConsumerUnitOfWork), which records the event id with the effect. Unit
tests drive the commands with an in-memory fake.
"""

from __future__ import annotations

from datetime import timedelta
from types import TracebackType
from typing import Protocol

import asyncpg

from reflexe_referral.adapters.store import ReferralStore
from reflexe_referral.domain.events import Event, ReferralRequested
from reflexe_referral.domain.model import Referral


class ReferralRepository(Protocol):
    """What the commands need of the referral store (ReferralStore on PostgreSQL)."""

    async def serialise(self, key: str) -> None:
        """Hold `key` until the unit of work ends: units serialising on one key run one at a time."""

    async def request_hash(self, referral_id: str) -> str | None: ...

    async def load(self, referral_id: str, for_update: bool = True) -> Referral | None: ...

    async def create(self, first: ReferralRequested, request_hash: str, rest: list[Event]) -> Referral: ...

    async def append(self, referral: Referral, new_events: list[Event]) -> None: ...

    async def audit(self, subject: str, actor: str, action: str, referral_id: str | None, department: str | None,
                    refused_code: str | None = None) -> None: ...

    async def referral_ids_of_patient(self, pseudonym: str) -> list[str]: ...

    async def patient_event_outcome(self, message_key: str) -> dict | None: ...

    async def record_patient_event_outcome(self, message_key: str, outcome: dict) -> None: ...


class UnitOfWork(Protocol):
    referrals: ReferralRepository

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Commits when the block ended without an exception, rolls back otherwise."""


class PostgresUnitOfWork:
    """One PostgreSQL transaction on a connection of the pool, for a command called over HTTP."""

    referrals: ReferralStore

    def __init__(self, pool: asyncpg.Pool, unanswered_after: timedelta) -> None:
        self._pool = pool
        self._unanswered_after = unanswered_after
        self._conn: asyncpg.pool.PoolConnectionProxy | None = None
        self._transaction: asyncpg.transaction.Transaction | None = None

    async def __aenter__(self) -> PostgresUnitOfWork:
        self._conn = await self._pool.acquire()
        try:
            self._transaction = self._conn.transaction()
            await self._transaction.start()
        except BaseException:
            await self._pool.release(self._conn)
            raise
        self.referrals = ReferralStore(self._conn, self._unanswered_after)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._conn is not None and self._transaction is not None
        try:
            if exc_type is None:
                await self._transaction.commit()
            else:
                await self._transaction.rollback()
        finally:
            await self._pool.release(self._conn)
            self._conn = self._transaction = None


class ConsumerUnitOfWork:
    """A command run by a Kafka consumer: inside the idempotent consumer's own transaction, which
    commits the effect with the record's event id, or rolls both back (reflexe_common.inbox)."""

    def __init__(self, conn: asyncpg.Connection, unanswered_after: timedelta) -> None:
        self.referrals = ReferralStore(conn, unanswered_after)

    async def __aenter__(self) -> ConsumerUnitOfWork:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        return None  # the consumer's transaction decides
