"""The gateway's PostgreSQL tables: recorded messages, their outcome, the unmatched list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

# Outcomes of a recorded message.
PENDING = "PENDING"  # recorded, its effect not carried out yet
APPLIED = "APPLIED"  # the referral changed
MATCHED = "MATCHED"  # the patient's referral was found; nothing to change (an ED exit)
UNMATCHED = "UNMATCHED"  # no open referral of that patient from that sender: kept, listed
REFUSED = "REFUSED"  # the referral's rules refused the change (e.g. already cancelled); code in detail
NO_EFFECT = "NO_EFFECT"  # an event with no effect on referrals (a transfer, an update, an ED registration)
CANCELLED = "CANCELLED"  # cancelled (A11/A12/A13) before its effect was carried out
NOT_UNDONE = "NOT_UNDONE"  # a cancellation of an effect that cannot be undone (listed for the desk)


@dataclass(frozen=True)
class Recorded:
    id: int
    ack_control_id: str
    duplicate: bool


@dataclass(frozen=True)
class NewMessage:
    sender_finess: str
    control_id: str
    ack_control_id: str
    trigger: str
    effect: str
    pseudonym: str
    event_at: datetime
    movement_id: str
    referral_hint: str | None
    status: str = PENDING


class MessageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, m: NewMessage) -> Recorded:
        """Insert once per (sender, MSH-10); a duplicate gets the first record's ACK id back."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO messages (sender_finess, control_id, ack_control_id, trigger, effect, pseudonym, "
                "event_at, movement_id, referral_hint, status, done_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10 = 'PENDING' THEN NULL ELSE now() END) "
                "ON CONFLICT (sender_finess, control_id) DO NOTHING RETURNING id, ack_control_id",
                m.sender_finess, m.control_id, m.ack_control_id, m.trigger, m.effect, m.pseudonym, m.event_at,
                m.movement_id, m.referral_hint, m.status)
            if row is not None:
                return Recorded(row["id"], row["ack_control_id"], duplicate=False)
            row = await conn.fetchrow("SELECT id, ack_control_id FROM messages WHERE sender_finess = $1 AND control_id = $2",
                                      m.sender_finess, m.control_id)
            return Recorded(row["id"], row["ack_control_id"], duplicate=True)

    async def cancellation_recorded(self, sender: str, pseudonym: str, movement_id: str) -> bool:
        """A cancellation of this movement arrived before the movement itself."""
        if not movement_id:
            return False
        return bool(await self._pool.fetchval(
            "SELECT 1 FROM messages WHERE sender_finess = $1 AND pseudonym = $2 AND movement_id = $3 "
            "AND effect = 'UNDO' LIMIT 1", sender, pseudonym, movement_id))

