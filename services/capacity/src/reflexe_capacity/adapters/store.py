"""PostgreSQL persistence of the registry, declarations, holds and match requests.

Each HAD's ledger is one row of counts (``ledgers``) written in the same transaction as the
hold or declaration that changes it, so a decision reads one row per candidate HAD however
many holds are live (the matcher keeps its partitions' ledgers in memory: owned_ledgers.py).
Ledgers are read without locks; a change is written only if the row's
``version`` is still the one the domain decided on (``save_*`` return False otherwise, and the
caller decides again on fresh rows). The conditional UPDATE takes the row lock and waits for a
concurrent writer of the same HAD to commit, so two matchers never both spend its last place:
that, with the domain rule, is what makes double booking impossible across matcher instances,
rebalances and redeliveries. Every change of an HAD's ledger and the events it enqueues happen
under that row lock, so the outbox order is the HADs' commit order.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger, Hold, HoldState, ResponseTimes
from reflexe_capacity.domain.registry import Contacts, HadEstablishment
from reflexe_common.vocabulary import CapacityStatus, Equipment, Mention


def _had(row: asyncpg.Record) -> HadEstablishment:
    return HadEstablishment(
        finess=row["finess"], name=row["name"], departments=frozenset(row["departments"]),
        mentions=frozenset(Mention(m) for m in row["mentions"]), mpp_supported=frozenset(row["mpp_supported"]),
        equipment=frozenset(Equipment(e) for e in row["equipment"]), zone_communes=frozenset(row["zone_communes"]),
        ehpad_conventions=frozenset(row["ehpad_conventions"]), authorised_places=row["authorised_places"],
        contacts=Contacts(webhook_url=row["webhook_url"], email=row["email"]),
    )


def _hold(row: asyncpg.Record) -> Hold:
    return Hold(hold_id=row["hold_id"], referral_id=str(row["referral_id"]), had_finess=row["had_finess"],
                made_at=row["made_at"], expires_at=row["expires_at"], state=HoldState(row["state"]),
                placed_under=row["placed_under"], converted_at=row["converted_at"])


def _declaration(row: asyncpg.Record | None) -> CapacityDeclaration | None:
    if row is None:
        return None
    return CapacityDeclaration(had_finess=row["had_finess"], places_available=row["places_available"],
                               admissions_possible_today=row["admissions_possible_today"],
                               status=CapacityStatus(row["status"]), declared_at=row["declared_at"],
                               active_patients=row["active_patients"])


def _ledger(row: asyncpg.Record, holds: list[Hold] | None = None) -> HadLedger:
    """A ledger from its row (``ledgers`` columns), with the holds the command works on."""
    declaration = None if row["declared_at"] is None else _declaration(row)
    return HadLedger(
        had_finess=row["had_finess"], declaration=declaration, holds=holds or [], holding=row["holding"],
        confirmed=row["confirmed"], promised=row["promised"], conversions=tuple(row["conversions"]),
        response_times=ResponseTimes(tuple(zip(row["answers_made_at"], row["answers_seconds"], strict=True))),
        version=row["version"])


# The ledger columns a save writes, after had_finess ($1) and the version read ($2).
_LEDGER_SET = ("places_available = $3, admissions_possible_today = $4, status = $5, declared_at = $6, "
               "active_patients = $7, holding = $8, confirmed = $9, promised = $10, conversions = $11, "
               "answers_made_at = $12, answers_seconds = $13, version = $14")


def _ledger_args(ledger: HadLedger, read_version: int) -> list:
    d = ledger.declaration
    answers = ledger.response_times.answers
    return [ledger.had_finess, read_version,
            d.places_available if d else None, d.admissions_possible_today if d else None,
            str(d.status) if d else None, d.declared_at if d else None, d.active_patients if d else None,
            ledger.holding, ledger.confirmed, ledger.promised, list(ledger.conversions),
            [m for m, _ in answers], [s for _, s in answers], ledger.version]


class CapacityStore:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    # ---- registry -------------------------------------------------------------------------
    async def upsert_had(self, had: HadEstablishment) -> None:
        await self.conn.execute(
            """INSERT INTO hads (finess, name, departments, mentions, mpp_supported, equipment, zone_communes,
                                 ehpad_conventions, authorised_places, webhook_url, email, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
               ON CONFLICT (finess) DO UPDATE SET name = $2, departments = $3, mentions = $4, mpp_supported = $5,
                 equipment = $6, zone_communes = $7, ehpad_conventions = $8, authorised_places = $9,
                 webhook_url = $10, email = $11, updated_at = now()""",
            had.finess, had.name, sorted(had.departments), sorted(had.mentions), sorted(had.mpp_supported),
            sorted(had.equipment), sorted(had.zone_communes), sorted(had.ehpad_conventions), had.authorised_places,
            had.contacts.webhook_url, had.contacts.email,
        )
        await self.conn.execute("INSERT INTO ledgers (had_finess) VALUES ($1) ON CONFLICT DO NOTHING", had.finess)

    async def had(self, finess: str) -> HadEstablishment | None:
        row = await self.conn.fetchrow("SELECT * FROM hads WHERE finess = $1", finess)
        return _had(row) if row else None

    # ---- ledgers --------------------------------------------------------------------------
    async def candidates(self, departments: list[str]) -> list[tuple[HadEstablishment, HadLedger]]:
        """Every HAD serving one of the departments with its ledger, FINESS order, in one query."""
        rows = await self.conn.fetch("SELECT * FROM hads JOIN ledgers ON had_finess = finess "
                                     "WHERE departments && $1 ORDER BY finess", departments)
        return [(_had(r), _ledger(r)) for r in rows]

    async def had_with_ledger(self, finess: str) -> tuple[HadEstablishment, HadLedger] | None:
        row = await self.conn.fetchrow("SELECT * FROM hads JOIN ledgers ON had_finess = finess WHERE finess = $1", finess)
        return None if row is None else (_had(row), _ledger(row))

    async def hold_with_ledger(self, hold_id: str) -> tuple[HadEstablishment, HadLedger] | None:
        """The hold an answer names, in its HAD's ledger; None if no such hold."""
        row = await self.conn.fetchrow(
            "SELECT hads.*, ledgers.*, h.hold_id, h.referral_id, h.made_at, h.expires_at, h.state, h.placed_under, "
            "h.converted_at FROM holds h JOIN hads ON hads.finess = h.had_finess "
            "JOIN ledgers ON ledgers.had_finess = h.had_finess WHERE h.hold_id = $1", hold_id)
        return None if row is None else (_had(row), _ledger(row, [_hold(row)]))

    async def save_ledger(self, ledger: HadLedger, read_version: int) -> bool:
        """Writes the ledger if nobody changed it since it was read at ``read_version``."""
        return await self.conn.fetchval(
            f"UPDATE ledgers SET {_LEDGER_SET} WHERE had_finess = $1 AND version = $2 RETURNING true",
            *_ledger_args(ledger, read_version)) is not None

    async def save_new_hold(self, ledger: HadLedger, read_version: int, hold: Hold, department: str,
                            by_desk: bool) -> bool:
        """The ledger with its new hold, and the HAD noted as tried for the referral: all or nothing,
        in one statement; False when the ledger changed since it was read."""
        return await self.conn.fetchval(
            f"WITH ledger AS (UPDATE ledgers SET {_LEDGER_SET} WHERE had_finess = $1 AND version = $2 RETURNING had_finess), "
            "hold AS (INSERT INTO holds (hold_id, referral_id, had_finess, department, made_at, expires_at, state, "
            "placed_under, by_desk) SELECT $15, $16, had_finess, $17, $18, $19, $20, $21, $22 FROM ledger), "
            "request AS (UPDATE match_requests SET tried_hads = CASE WHEN $1 = ANY(tried_hads) THEN tried_hads "
            "ELSE tried_hads || $1 END WHERE referral_id = $16 AND EXISTS (SELECT FROM ledger)) "
            "SELECT true FROM ledger",
            *_ledger_args(ledger, read_version), hold.hold_id, uuid.UUID(hold.referral_id), department,
            hold.made_at, hold.expires_at, str(hold.state), hold.placed_under, by_desk) is not None

    async def save_new_holds(self, ledgers: list[tuple[int, HadLedger]], holds: list[tuple[Hold, str, bool]]) -> bool:
        """Several new holds in one statement: each ledger's counts, written only if its version
        is still the one read (``ledgers``: (version read, ledger), one per HAD), the holds (hold,
        department, by desk), their HADs noted as tried for their referrals (one hold per referral).
        False when a ledger changed since it was read (the caller rolls back: holds were inserted)."""
        return await self.conn.fetchval(
            "WITH ledger AS (UPDATE ledgers l SET holding = u.holding, promised = u.promised, version = u.version "
            "FROM unnest($1::text[], $2::bigint[], $3::int[], $4::int[], $5::bigint[]) "
            "AS u(had_finess, read_version, holding, promised, version) "
            "WHERE l.had_finess = u.had_finess AND l.version = u.read_version RETURNING l.had_finess), "
            "hold AS (INSERT INTO holds (hold_id, referral_id, had_finess, department, made_at, expires_at, state, "
            "placed_under, by_desk) SELECT * FROM unnest($6::text[], $7::uuid[], $8::text[], $9::text[], "
            "$10::timestamptz[], $11::timestamptz[], $12::text[], $13::timestamptz[], $14::bool[])), "
            "request AS (UPDATE match_requests m SET tried_hads = CASE WHEN t.had_finess = ANY(m.tried_hads) "
            "THEN m.tried_hads ELSE m.tried_hads || t.had_finess END "
            "FROM unnest($7::uuid[], $8::text[]) AS t(referral_id, had_finess) WHERE m.referral_id = t.referral_id) "
            "SELECT count(*) = $15 FROM ledger",
            [ledger.had_finess for _, ledger in ledgers], [read for read, _ in ledgers],
            [ledger.holding for _, ledger in ledgers], [ledger.promised for _, ledger in ledgers],
            [ledger.version for _, ledger in ledgers],
            [h.hold_id for h, _, _ in holds], [uuid.UUID(h.referral_id) for h, _, _ in holds],
            [h.had_finess for h, _, _ in holds], [d for _, d, _ in holds], [h.made_at for h, _, _ in holds],
            [h.expires_at for h, _, _ in holds], [str(h.state) for h, _, _ in holds],
            [h.placed_under for h, _, _ in holds], [by_desk for _, _, by_desk in holds], len(ledgers))

    async def save_hold_change(self, ledger: HadLedger, read_version: int, hold: Hold, at: datetime,
                               answered: bool) -> bool:
        """The ledger with the hold's new state, in one statement; False when the ledger changed
        since it was read. answered: the change is the HAD's own answer (its response time)."""
        return await self.conn.fetchval(
            f"WITH ledger AS (UPDATE ledgers SET {_LEDGER_SET} WHERE had_finess = $1 AND version = $2 RETURNING had_finess), "
            "hold AS (UPDATE holds SET state = $16, converted_at = $17, "
            "answered_at = CASE WHEN $19 AND answered_at IS NULL THEN $18 ELSE answered_at END, "
            "released_at = CASE WHEN $16 = 'RELEASED' THEN $18 ELSE released_at END "
            "WHERE hold_id = $15 AND EXISTS (SELECT FROM ledger)) "
            "SELECT true FROM ledger",
            *_ledger_args(ledger, read_version), hold.hold_id, str(hold.state), hold.converted_at, at,
            answered) is not None

    async def save_declaration(self, d: CapacityDeclaration, channel: str) -> bool:
        """Stores the declaration in the history; False when it was already stored (redelivery)."""
        inserted = await self.conn.fetchval(
            "INSERT INTO declarations (had_finess, places_available, admissions_possible_today, status, declared_at, "
            "channel, active_patients) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (had_finess, declared_at) DO NOTHING RETURNING 1",
            d.had_finess, d.places_available, d.admissions_possible_today, str(d.status), d.declared_at, channel,
            d.active_patients,
        )
        return bool(inserted)

    async def holding_holds_of_referral(self, referral_id: str) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            "SELECT hold_id, had_finess FROM holds WHERE referral_id = $1 AND state IN ('ACTIVE', 'CONFIRMED')",
            uuid.UUID(referral_id))

    # ---- match requests -------------------------------------------------------------------
    async def save_match_request(self, referral_id: str, department: str, request: bytes) -> asyncpg.Record | None:
        """Stores a new referral's request; its row (as ``lock_match_request`` gives it) when new,
        None when it was already stored (redelivery). The new row is locked by its insertion."""
        return await self.conn.fetchrow(
            "INSERT INTO match_requests (referral_id, department, request) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING *, 0::bigint AS attempts, false AS holding",
            uuid.UUID(referral_id), department, request)

    async def lock_match_request(self, referral_id: str) -> asyncpg.Record | None:
        """The referral's request, locked, with how many holds it had (attempts) and whether one
        still takes a place (holding)."""
        return await self.conn.fetchrow(
            "SELECT m.*, (SELECT count(*) FROM holds WHERE referral_id = m.referral_id) AS attempts, "
            "EXISTS (SELECT FROM holds WHERE referral_id = m.referral_id AND state IN ('ACTIVE', 'CONFIRMED')) AS holding "
            "FROM match_requests m WHERE m.referral_id = $1 FOR UPDATE OF m", uuid.UUID(referral_id))

    async def update_match_request(self, referral_id: str, *, tried: str | None = None,
                                   departments: list[str] | None = None, open: bool | None = None) -> None:
        await self.conn.execute(
            "UPDATE match_requests SET "
            "tried_hads = CASE WHEN $2::text IS NULL OR $2 = ANY(tried_hads) THEN tried_hads ELSE tried_hads || $2 END, "
            "departments = COALESCE((SELECT array_agg(DISTINCT d ORDER BY d) FROM unnest(departments || $3::text[]) d), departments), "
            "open = COALESCE($4, open) WHERE referral_id = $1",
            uuid.UUID(referral_id), tried, departments or [], open,
        )

    async def board(self, department: str) -> list[tuple[HadEstablishment, HadLedger]]:
        """Every HAD serving the department with its ledger, without locking (a read view)."""
        return await self.candidates([department])

    async def capacity_view(self, finess: str) -> tuple[HadEstablishment, HadLedger] | None:
        """One HAD with its ledger, without locking (a read view); None if not registered."""
        return await self.had_with_ledger(finess)
