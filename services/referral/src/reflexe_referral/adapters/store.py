"""PostgreSQL persistence of referrals: the event log, the current-state row, durable clocks,
and the outbox, all written in the caller's transaction."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import asyncpg

from reflexe_common.audit import AuditEntry, insert
from reflexe_common.envelope import message_class, wrap
from reflexe_common.outbox import enqueue_many_sql, outbox_headers
from reflexe_common.topics import REFERRAL_EVENTS
from reflexe_referral.adapters import codec
from reflexe_referral.domain.events import Event, ReferralRequested
from reflexe_referral.domain.model import Referral

EVENT_SOURCE = "reflexe/referral"


# The referral's row in ReferralStore._record's statement: $1 its id, $11–$14 its status,
# version, update time and widened departments; a new referral's other columns from $18.
_UPDATE_REFERRAL = ("UPDATE referrals SET status = $11, version = $12, updated_at = $13, widened_to = $14 "
                    "WHERE referral_id = $1")
_INSERT_REFERRAL = ("INSERT INTO referrals (referral_id, department, source_finess, request_hash, status, version, "
                    "requested_at, updated_at, widened_to, patient_pseudonym) "
                    "VALUES ($1, $18, $19, $20, $11, $12, $21, $13, $14, $22)")


def _decoded(rows) -> list[Event]:
    return [codec.from_proto(message_class(r["type"]).FromString(r["payload"])) for r in rows]


def _applied(referral: Referral, events: list[Event]) -> list[tuple[int, Event]]:
    """Each event applied to the referral, with the sequence number (its version) it gets."""
    numbered = []
    for event in events:
        referral.apply(event)
        numbered.append((referral.version, event))
    return numbered


class ReferralStore:
    def __init__(self, conn: asyncpg.Connection, unanswered_after: timedelta) -> None:
        self._conn = conn
        self._unanswered_after = unanswered_after

    async def serialise(self, key: str) -> None:
        """Hold `key` until the transaction ends (an advisory lock: the key needs no row)."""
        await self._conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", key)

    async def request_hash(self, referral_id: str) -> str | None:
        return await self._conn.fetchval("SELECT request_hash FROM referrals WHERE referral_id = $1", uuid.UUID(referral_id))

    async def load(self, referral_id: str, for_update: bool = True) -> Referral | None:
        """The referral folded from its events; with for_update, locked until the transaction ends.
        Two statements: the events are read after the lock is held, so that they include those of a
        command that committed while this one waited (one statement would read them as of before)."""
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(f"SELECT version FROM referrals WHERE referral_id = $1{lock}", uuid.UUID(referral_id))
        if row is None:
            return None
        return Referral.from_events(await self.events(referral_id))

    async def events(self, referral_id: str) -> list[Event]:
        rows = await self._conn.fetch(
            "SELECT type, payload FROM referral_events WHERE referral_id = $1 ORDER BY seq", uuid.UUID(referral_id)
        )
        return _decoded(rows)

    async def create(self, first: ReferralRequested, request_hash: str, rest: list[Event]) -> Referral:
        referral = Referral.from_events([first])
        request = first.request
        await self._record(referral, [(referral.version, first), *_applied(referral, rest)], new_row=[
            request.department, request.source.finess, request_hash, request.requested_at, request.patient.pseudonym])
        return referral

    async def append(self, referral: Referral, new_events: list[Event]) -> None:
        """Apply and persist the events, publish them through the outbox, reset the clocks."""
        if new_events:
            await self._record(referral, _applied(referral, new_events))

    async def _record(self, referral: Referral, written: list[tuple[int, Event]], new_row: list | None = None) -> None:
        """The events (each with its sequence number), their outbox rows, the referral's row and its
        clocks, in one statement: one round trip per command. The sub-statements touch different
        rows, so their order within it does not matter. ``new_row``: a new referral's department,
        source, request hash, request time and pseudonym (its row is inserted, else updated)."""
        envelopes = [wrap(codec.to_proto(event, referral.department, referral.request.patient.place_of_care),
                          EVENT_SOURCE, time=event.occurred_at) for _, event in written]
        rid = uuid.UUID(referral.referral_id)
        clocks = referral.clocks(self._unanswered_after)
        await self._conn.execute(
            f"WITH state AS ({_INSERT_REFERRAL if new_row else _UPDATE_REFERRAL}), "
            "events AS (INSERT INTO referral_events (referral_id, seq, event_id, type, occurred_at, actor, payload) "
            "SELECT $1, * FROM unnest($2::int[], $3::uuid[], $4::text[], $5::timestamptz[], $6::text[], $7::bytea[])), "
            f"outbox AS ({enqueue_many_sql('$3', '$8', '$9', '$10', '$7')}), "
            "stale AS (DELETE FROM clocks WHERE referral_id = $1 AND (kind, offer_id) NOT IN "
            "(SELECT * FROM unnest($15::text[], $16::text[]))) "
            "INSERT INTO clocks (referral_id, kind, offer_id, due_at) "
            "SELECT $1, * FROM unnest($15::text[], $16::text[], $17::timestamptz[]) "
            "ON CONFLICT (referral_id, kind, offer_id) DO UPDATE SET due_at = EXCLUDED.due_at",
            rid, [seq for seq, _ in written], [uuid.UUID(e.id) for e in envelopes], [e.type for e in envelopes],
            [event.occurred_at for _, event in written], [event.actor for _, event in written],
            [e.value() for e in envelopes],
            [REFERRAL_EVENTS.name] * len(written), [referral.department] * len(written),
            [outbox_headers(e) for e in envelopes],
            str(referral.status), referral.version, written[-1][1].occurred_at,
            [d for d in referral.departments if d != referral.department],
            [str(c.kind) for c in clocks], [c.offer_id or "" for c in clocks], [c.due_at for c in clocks],
            *(new_row or []))

    async def referral_ids_of_patient(self, pseudonym: str) -> list[str]:
        """The patient's referrals, the latest first."""
        rows = await self._conn.fetch("SELECT referral_id FROM referrals WHERE patient_pseudonym = $1 "
                                      "ORDER BY requested_at DESC", pseudonym)
        return [str(r["referral_id"]) for r in rows]

    async def patient_event_outcome(self, message_key: str) -> dict | None:
        """What a patient event reported under this message key was answered, if it was."""
        earlier = await self._conn.fetchval("SELECT outcome FROM patient_event_receipts WHERE message_key = $1",
                                            message_key)
        return json.loads(earlier) if earlier is not None else None

    async def record_patient_event_outcome(self, message_key: str, outcome: dict) -> None:
        await self._conn.execute("INSERT INTO patient_event_receipts (message_key, outcome) VALUES ($1, $2)",
                                 message_key, json.dumps(outcome))

    async def due_clocks(self, now: datetime, limit: int = 100) -> list[asyncpg.Record]:
        """Due clocks, unlocked: the firing transaction locks the referral first, then re-checks
        the clock (the same order as every command, so two firings never deadlock)."""
        return await self._conn.fetch(
            "SELECT referral_id, kind, offer_id, due_at FROM clocks WHERE due_at <= $1 ORDER BY due_at LIMIT $2", now, limit
        )

    async def clock_still_due(self, referral_id: str, kind: str, offer_id: str, now: datetime) -> bool:
        return bool(await self._conn.fetchval(
            "SELECT 1 FROM clocks WHERE referral_id = $1 AND kind = $2 AND offer_id = $3 AND due_at <= $4",
            uuid.UUID(referral_id), kind, offer_id, now,
        ))

    async def drop_clock(self, referral_id: str, kind: str, offer_id: str) -> None:
        await self._conn.execute(
            "DELETE FROM clocks WHERE referral_id = $1 AND kind = $2 AND offer_id = $3", uuid.UUID(referral_id), kind, offer_id
        )

    async def audit(self, subject: str, actor: str, action: str, referral_id: str | None, department: str | None,
                    refused_code: str | None = None) -> None:
        """A command's entry in the platform's audit trail, in the command's own transaction."""
        await insert(self._conn, AuditEntry(
            subject=subject, actor=actor, action=action, department=department,
            referral_ids=(uuid.UUID(referral_id),) if referral_id else (),
            status=409 if refused_code else 200, code=refused_code or "OK",
            detail={"code": refused_code} if refused_code else {}))

