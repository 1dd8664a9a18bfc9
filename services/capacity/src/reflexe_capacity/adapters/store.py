"""PostgreSQL persistence of the registry, declarations, holds and match requests.

Ledgers are loaded under row locks on their HADs (in FINESS order, so two matchers never
deadlock): the domain decides on a consistent view, and no other transaction can place a hold
on those HADs until this one commits. That, with the domain rule, is what makes double booking
impossible across matcher instances, rebalances and redeliveries.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import asyncpg

from reflexe_capacity.domain.capacity import CapacityDeclaration, HadLedger, Hold, HoldState
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

    async def had(self, finess: str) -> HadEstablishment | None:
        row = await self.conn.fetchrow("SELECT * FROM hads WHERE finess = $1", finess)
        return _had(row) if row else None

    async def hads_serving(self, departments: list[str]) -> list[HadEstablishment]:
        rows = await self.conn.fetch("SELECT * FROM hads WHERE departments && $1 ORDER BY finess", departments)
        return [_had(r) for r in rows]

    # ---- ledgers --------------------------------------------------------------------------
    async def lock_ledgers(self, finesses: list[str]) -> dict[str, HadLedger]:
        """Lock the HADs (FINESS order) and load their ledgers: current declaration and the
        holds that can still count against it."""
        locked = await self.conn.fetch("SELECT finess FROM hads WHERE finess = ANY($1) ORDER BY finess FOR UPDATE",
                                       sorted(set(finesses)))
        ids = [r["finess"] for r in locked]
        declarations = {r["had_finess"]: _declaration(r) for r in await self.conn.fetch(
            "SELECT DISTINCT ON (had_finess) * FROM declarations WHERE had_finess = ANY($1) "
            "ORDER BY had_finess, declared_at DESC", ids)}
        holds: dict[str, list[Hold]] = {f: [] for f in ids}
        for row in await self.conn.fetch(
            "SELECT * FROM holds WHERE had_finess = ANY($1) AND state IN ('ACTIVE', 'CONFIRMED', 'CONVERTED') ORDER BY made_at, hold_id",
            ids,
        ):
            declaration = declarations.get(row["had_finess"])
            # A conversion before the current declaration no longer counts: keep the ledger small.
            # (One converted after it still takes its place, even if its hold was placed under an
            # older declaration: see "conversions since the declaration" in domain/capacity.py.)
            if row["state"] == "CONVERTED" and (declaration is None or row["converted_at"] < declaration.declared_at):
                continue
            holds[row["had_finess"]].append(_hold(row))
        return {f: HadLedger(had_finess=f, declaration=declarations.get(f), holds=holds[f]) for f in ids}

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

    async def insert_hold(self, hold: Hold, department: str, by_desk: bool) -> None:
        await self.conn.execute(
            "INSERT INTO holds (hold_id, referral_id, had_finess, department, made_at, expires_at, state, placed_under, by_desk) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            hold.hold_id, uuid.UUID(hold.referral_id), hold.had_finess, department, hold.made_at, hold.expires_at,
            str(hold.state), hold.placed_under, by_desk,
        )

    async def save_hold_state(self, hold: Hold, at: datetime, answered: bool) -> None:
        """answered: the change is the HAD's own answer (it counts for its response time)."""
        await self.conn.execute(
            "UPDATE holds SET state = $2, converted_at = $3, "
            "answered_at = CASE WHEN $5 AND answered_at IS NULL THEN $4 ELSE answered_at END, "
            "released_at = CASE WHEN $2 = 'RELEASED' THEN $4 ELSE released_at END "
            "WHERE hold_id = $1",
            hold.hold_id, str(hold.state), hold.converted_at, at, answered,
        )

    async def hold_of_offer(self, offer_id: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow("SELECT hold_id, had_finess, state FROM holds WHERE hold_id = $1", offer_id)

    async def holding_holds_of_referral(self, referral_id: str) -> list[asyncpg.Record]:
        return await self.conn.fetch(
            "SELECT hold_id, had_finess FROM holds WHERE referral_id = $1 AND state IN ('ACTIVE', 'CONFIRMED')",
            uuid.UUID(referral_id))

    async def count_holds_of_referral(self, referral_id: str) -> int:
        return await self.conn.fetchval("SELECT count(*) FROM holds WHERE referral_id = $1", uuid.UUID(referral_id))

    async def median_response_seconds(self, finesses: list[str], now: datetime, window: timedelta) -> dict[str, float]:
        rows = await self.conn.fetch(
            "SELECT had_finess, percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM answered_at - made_at)) AS median "
            "FROM holds WHERE had_finess = ANY($1) AND answered_at IS NOT NULL AND made_at >= $2 AND made_at <= $3 "
            "GROUP BY had_finess",
            finesses, now - window, now,
        )
        return {r["had_finess"]: float(r["median"]) for r in rows}

    # ---- match requests -------------------------------------------------------------------
    async def save_match_request(self, referral_id: str, department: str, request: bytes) -> bool:
        return bool(await self.conn.fetchval(
            "INSERT INTO match_requests (referral_id, department, request) VALUES ($1, $2, $3) "
            "ON CONFLICT DO NOTHING RETURNING 1", uuid.UUID(referral_id), department, request))

    async def lock_match_request(self, referral_id: str) -> asyncpg.Record | None:
        return await self.conn.fetchrow("SELECT * FROM match_requests WHERE referral_id = $1 FOR UPDATE",
                                        uuid.UUID(referral_id))

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
        return await self._read_ledgers(await self.hads_serving([department]))

    async def capacity_view(self, finess: str) -> tuple[HadEstablishment, HadLedger] | None:
        """One HAD with its ledger, without locking (a read view); None if not registered."""
        had = await self.had(finess)
        return None if had is None else (await self._read_ledgers([had]))[0]

    async def _read_ledgers(self, hads: list[HadEstablishment]) -> list[tuple[HadEstablishment, HadLedger]]:
        ids = [h.finess for h in hads]
        declarations = {r["had_finess"]: _declaration(r) for r in await self.conn.fetch(
            "SELECT DISTINCT ON (had_finess) * FROM declarations WHERE had_finess = ANY($1) ORDER BY had_finess, declared_at DESC", ids)}
        holds: dict[str, list[Hold]] = {f: [] for f in ids}
        for row in await self.conn.fetch(
            "SELECT * FROM holds WHERE had_finess = ANY($1) AND state IN ('ACTIVE', 'CONFIRMED', 'CONVERTED')", ids
        ):
            holds[row["had_finess"]].append(_hold(row))
        return [(h, HadLedger(h.finess, declarations.get(h.finess), holds[h.finess])) for h in hads]
