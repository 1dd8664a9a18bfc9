"""PostgreSQL persistence of referrals: the event log, the current-state row, durable clocks,
and the outbox, all written in the caller's transaction."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import asyncpg

from reflexe_common.audit import AuditEntry, insert
from reflexe_common.envelope import message_class, wrap
from reflexe_common.outbox import enqueue
from reflexe_common.topics import REFERRAL_EVENTS
from reflexe_referral.adapters import codec
from reflexe_referral.domain.events import Event, ReferralRequested
from reflexe_referral.domain.model import Referral

EVENT_SOURCE = "reflexe/referral"


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
        """The referral folded from its events; with for_update, locked until the transaction ends."""
        lock = " FOR UPDATE" if for_update else ""
        row = await self._conn.fetchrow(f"SELECT version FROM referrals WHERE referral_id = $1{lock}", uuid.UUID(referral_id))
        if row is None:
            return None
        return Referral.from_events(await self.events(referral_id))

    async def events(self, referral_id: str) -> list[Event]:
        rows = await self._conn.fetch(
            "SELECT type, payload FROM referral_events WHERE referral_id = $1 ORDER BY seq", uuid.UUID(referral_id)
        )
        return [codec.from_proto(message_class(r["type"]).FromString(r["payload"])) for r in rows]

    async def create(self, first: ReferralRequested, request_hash: str, rest: list[Event]) -> Referral:
        request = first.request
        await self._conn.execute(
            "INSERT INTO referrals (referral_id, department, source_finess, request_hash, status, version, requested_at, "
            "updated_at, patient_pseudonym) VALUES ($1, $2, $3, $4, 'REQUESTED', 0, $5, $5, $6)",
            uuid.UUID(request.referral_id), request.department, request.source.finess, request_hash, request.requested_at,
            request.patient.pseudonym,
        )
        referral = Referral.from_events([first])
        await self._persist(referral, first)
        await self._save_state(referral, first.occurred_at)
        await self.append(referral, rest)
        return referral

    async def append(self, referral: Referral, new_events: list[Event]) -> None:
        """Apply and persist the events, publish them through the outbox, reset the clocks."""
        if not new_events:
            return
        for event in new_events:
            referral.apply(event)
            await self._persist(referral, event)
        await self._save_state(referral, new_events[-1].occurred_at)

    async def _persist(self, referral: Referral, event: Event) -> None:
        message = codec.to_proto(event, referral.department, referral.request.patient.place_of_care)
        envelope = wrap(message, EVENT_SOURCE, time=event.occurred_at)
        await self._conn.execute(
            "INSERT INTO referral_events (referral_id, seq, event_id, type, occurred_at, actor, payload) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            uuid.UUID(event.referral_id), referral.version, uuid.UUID(envelope.id), envelope.type,
            event.occurred_at, event.actor, envelope.value(),
        )
        await enqueue(self._conn, REFERRAL_EVENTS.name, referral.department, envelope)

    async def _save_state(self, referral: Referral, at: datetime) -> None:
        await self._conn.execute(
            "UPDATE referrals SET status = $2, version = $3, updated_at = $4, widened_to = $5 WHERE referral_id = $1",
            uuid.UUID(referral.referral_id), str(referral.status), referral.version, at,
            [d for d in referral.departments if d != referral.department],
        )
        await self._reset_clocks(referral)

    async def _reset_clocks(self, referral: Referral) -> None:
        rid = uuid.UUID(referral.referral_id)
        await self._conn.execute("DELETE FROM clocks WHERE referral_id = $1", rid)
        clocks = referral.clocks(self._unanswered_after)
        if clocks:
            await self._conn.executemany(
                "INSERT INTO clocks (referral_id, kind, offer_id, due_at) VALUES ($1, $2, $3, $4)",
                [(rid, str(c.kind), c.offer_id or "", c.due_at) for c in clocks],
            )

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

