"""Use cases of the referral service: each runs in one unit of work, loads the referral under a
lock, lets the domain decide, and stores the resulting events (which the outbox publishes).

The commands (submit_referral, act_on_referral) are the one path whatever the door: the REST and
FHIR endpoints and the Kafka consumers build their input, run them, and translate the exceptions
they raise (an HTTP 4xx or OperationOutcome, a dead-lettered record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import asyncpg

from reflexe_common.geography import Geography
from reflexe_referral.adapters.codec import request_to_proto
from reflexe_referral.adapters.store import ReferralStore
from reflexe_referral.domain.errors import IllegalTransition, InvalidRequest
from reflexe_referral.domain.events import Event
from reflexe_referral.domain.model import ClockKind, Referral
from reflexe_referral.domain.values import ReferralRequest
from reflexe_referral.service_layer.unit_of_work import PostgresUnitOfWork, UnitOfWork


class UnknownReferral(Exception):
    pass


class ConflictingDuplicate(Exception):
    """The same referral_id was sent again with a different body."""


class UnknownCommune(Exception):
    """The patient's care commune is no INSEE code of the official geographic code."""

    field = "patient.care_commune"

    def __init__(self, insee_code: str) -> None:
        super().__init__(f"unknown INSEE code {insee_code!r} in {self.field}")
        self.insee_code = insee_code


class NotTheSource(Exception):
    """An establishment submitting a referral in another's name (source.finess)."""

    def __init__(self, submitted_by: str, source_finess: str) -> None:
        super().__init__(f"{submitted_by} may only submit referrals as itself, not as {source_finess} (source.finess)")
        self.submitted_by = submitted_by


@dataclass(frozen=True)
class SubmitReferral:
    """A referral as a door received it. Its department is the command's to find, from the care
    commune: whatever the door put there is replaced."""

    request: ReferralRequest
    # Whether requested_at came with the request; if not, the door stamped it with its own time.
    stamped_by_client: bool
    # The FINESS of the establishment submitting; None for an admin, who may submit for any source.
    submitted_by: str | None


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


async def submit_referral(uow: UnitOfWork, command: SubmitReferral, now: datetime) -> Submitted:
    """Open a referral, or answer with the one already opened under its id when the body is the
    same (a client's retry). Raises NotTheSource, UnknownCommune, InvalidRequest (the domain's
    problems, each naming its field) or ConflictingDuplicate; nothing is stored then."""
    request = command.request
    if command.submitted_by is not None and command.submitted_by != request.source.finess:
        raise NotTheSource(command.submitted_by, request.source.finess)
    commune = Geography.load().commune(request.patient.care_commune)
    if commune is None:
        raise UnknownCommune(request.patient.care_commune)
    request = replace(request, department=commune.department_code)
    if problems := request.validate():
        raise InvalidRequest(problems)
    fingerprint = request_fingerprint(request, command.stamped_by_client)
    async with uow:
        # Serialise concurrent submissions of the same id (client retries racing each other).
        await uow.referrals.serialise(request.referral_id)
        existing = await uow.referrals.request_hash(request.referral_id)
        if existing is not None:
            if existing != fingerprint:
                raise ConflictingDuplicate(request.referral_id)
            return Submitted(await uow.referrals.load(request.referral_id, for_update=False), created=False)
        first, *rest = Referral.request(request, now)
        return Submitted(await uow.referrals.create(first, fingerprint, rest), created=True)


async def act_on_referral(uow: UnitOfWork, referral_id: str, decide: Callable[[Referral], list[Event]],
                          actor: str | None = None, action: str | None = None, subject: str | None = None) -> Referral:
    """Run one decision on the referral, locked; with an action name, an audit record is written
    whatever the outcome (a refusal's in a unit of its own: the decision's is rolled back).
    Raises UnknownReferral, or the domain's IllegalTransition."""
    department = None
    try:
        async with uow:
            referral = await uow.referrals.load(referral_id)
            if referral is None:
                raise UnknownReferral(referral_id)
            department = referral.department
            await uow.referrals.append(referral, decide(referral))
            if action:
                await uow.referrals.audit(subject or "unknown", actor or "unknown", action, referral_id, department)
            return referral
    except IllegalTransition as exc:
        if action:
            async with uow:
                await uow.referrals.audit(subject or "unknown", actor or "unknown", action, referral_id, department,
                                          refused_code=exc.code)
        raise


class ReferralService:
    """The commands on PostgreSQL, with the service's clock, for the HTTP doors; and the reads."""

    def __init__(self, pool: asyncpg.Pool, unanswered_after: timedelta,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._unanswered_after = unanswered_after
        self.now = clock

    def unit_of_work(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self._pool, self._unanswered_after)

    async def submit(self, command: SubmitReferral, now: datetime) -> Submitted:
        return await submit_referral(self.unit_of_work(), command, now)

    async def act(self, referral_id: str, decide: Callable[[Referral], list[Event]],
                  actor: str | None = None, action: str | None = None, subject: str | None = None) -> Referral:
        return await act_on_referral(self.unit_of_work(), referral_id, decide, actor, action, subject)

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
