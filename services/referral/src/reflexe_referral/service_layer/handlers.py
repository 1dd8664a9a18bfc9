"""Use cases of the referral service: each runs in one transaction, loads the referral under a
lock, lets the domain decide, and stores the resulting events (which the outbox publishes)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import asyncpg

from reflexe_referral.adapters.codec import request_to_proto
from reflexe_referral.adapters.store import ReferralStore
from reflexe_referral.domain.errors import IllegalTransition
from reflexe_referral.domain.events import Event
from reflexe_referral.domain.model import ClockKind, Referral
from reflexe_referral.domain.values import ReferralRequest


class UnknownReferral(Exception):
    pass


class ConflictingDuplicate(Exception):
    """The same referral_id was sent again with a different body."""


@dataclass(frozen=True)
class Submitted:
    referral: Referral
    created: bool


# Stands for a requested_at the server filled in: a client retrying a body without one must get
# the same fingerprint, whatever the time of each attempt.
_SERVER_STAMPED = datetime(1970, 1, 1, tzinfo=UTC)


def request_fingerprint(request: ReferralRequest, stamped_by_client: bool = True) -> str:
    """Identifies a request body for idempotency, ignoring the time the server filled in."""
    if not stamped_by_client:
        request = replace(request, requested_at=_SERVER_STAMPED)
    message = request_to_proto(request)
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


class ReferralService:
    def __init__(self, pool: asyncpg.Pool, unanswered_after: timedelta,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._unanswered_after = unanswered_after
        self.now = clock

    async def submit(self, request: ReferralRequest, fingerprint: str) -> Submitted:
        async with self._pool.acquire() as conn, conn.transaction():
            store = ReferralStore(conn, self._unanswered_after)
            # Serialise concurrent submissions of the same id (client retries racing each other).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", request.referral_id)
            existing = await store.request_hash(request.referral_id)
            if existing is not None:
                if existing != fingerprint:
                    raise ConflictingDuplicate(request.referral_id)
                return Submitted(await store.load(request.referral_id, for_update=False), created=False)
            first, *rest = Referral.request(request, self.now())
            return Submitted(await store.create(first, fingerprint, rest), created=True)

    async def act(self, referral_id: str, decide: Callable[[Referral], list[Event]],
                  actor: str | None = None, action: str | None = None, subject: str | None = None) -> Referral:
        """Run one decision; with an action name, an audit record is written whatever the outcome."""
        department = None
        async with self._pool.acquire() as conn:
            try:
                async with conn.transaction():
                    store = ReferralStore(conn, self._unanswered_after)
                    referral = await store.load(referral_id)
                    if referral is None:
                        raise UnknownReferral(referral_id)
                    department = referral.department
                    await store.append(referral, decide(referral))
                    if action:
                        await store.audit(subject or "unknown", actor or "unknown", action, referral_id, department)
                    return referral
            except IllegalTransition as exc:
                if action:
                    await ReferralStore(conn, self._unanswered_after).audit(
                        subject or "unknown", actor or "unknown", action, referral_id, department, refused_code=exc.code)
                raise

    async def get(self, referral_id: str) -> tuple[Referral, list[Event]]:
        async with self._pool.acquire() as conn:
            store = ReferralStore(conn, self._unanswered_after)
            events = await store.events(referral_id)
        if not events:
            raise UnknownReferral(referral_id)
        return Referral.from_events(events), events

    async def open_referrals(self, department: str, limit: int = 200, offset: int = 0) -> list[Referral]:
        """The department's open referrals, and those another desk widened the search to it."""
        async with self._pool.acquire() as conn:
            ids = await conn.fetch(
                "SELECT referral_id FROM referrals WHERE (department = $1 OR widened_to @> ARRAY[$1]) "
                "AND status NOT IN ('INELIGIBLE', 'CANCELLED', 'DISCHARGED', 'ADMITTED') "
                "ORDER BY requested_at, referral_id LIMIT $2 OFFSET $3",
                department, limit, offset,
            )
            store = ReferralStore(conn, self._unanswered_after)
            return [Referral.from_events(await store.events(str(r["referral_id"]))) for r in ids]

    async def offered_to(self, had_finess: str, limit: int = 200) -> list[Referral]:
        """Referrals whose live offer awaits this HAD's answer. The row does not name the HAD, so
        the OFFERED ones are folded and filtered: few at a time, each offer living one hold."""
        async with self._pool.acquire() as conn:
            ids = await conn.fetch("SELECT referral_id FROM referrals WHERE status = 'OFFERED' ORDER BY requested_at, referral_id")
            store = ReferralStore(conn, self._unanswered_after)
            offered = []
            for row in ids:
                referral = Referral.from_events(await store.events(str(row["referral_id"])))
                if referral.current_offer is not None and referral.current_offer.had_finess == had_finess:
                    offered.append(referral)
                    if len(offered) >= limit:
                        break
            return offered

    async def fire_due_clocks(self) -> int:
        """Fire every clock that is due; returns how many fired. Survives restarts: clocks live in PostgreSQL."""
        now = self.now()
        async with self._pool.acquire() as conn:
            due = await ReferralStore(conn, self._unanswered_after).due_clocks(now)
        for clock in due:
            referral_id, kind, offer_id = str(clock["referral_id"]), clock["kind"], clock["offer_id"]
            async with self._pool.acquire() as conn, conn.transaction():
                store = ReferralStore(conn, self._unanswered_after)
                referral = await store.load(referral_id)
                if referral is None or not await store.clock_still_due(referral_id, kind, offer_id, now):
                    continue
                await store.drop_clock(referral_id, kind, offer_id)
                await store.append(referral, _fire(referral, ClockKind(kind), offer_id, now))
        return len(due)


def _fire(referral: Referral, kind: ClockKind, offer_id: str, now: datetime) -> list[Event]:
    match kind:
        case ClockKind.HOLD_EXPIRY:
            return referral.expire(offer_id, now)
        case ClockKind.OFFER_UNANSWERED:
            return referral.offer_unanswered(offer_id, now)
        case ClockKind.ADMISSION_OVERDUE:
            return referral.admission_overdue(now)
