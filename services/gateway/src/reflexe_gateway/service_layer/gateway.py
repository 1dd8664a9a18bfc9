"""Receiving an HL7 message (read, authenticate the sender, pseudonymise, record, acknowledge)
and carrying out the recorded effects, in event order, through the referral service.

Durable before ACK: `receive` answers AA only once the message's row is committed. A duplicate
(same sender, same MSH-10) gets the same ACK and no second row, hence no second effect.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from reflexe_gateway import metrics
from reflexe_gateway.adapters import store as st
from reflexe_gateway.adapters.referral_client import ReferralClient, RetryLater
from reflexe_gateway.domain.ack import build_ack
from reflexe_gateway.domain.effects import Effect, SenderKind, effect_of
from reflexe_gateway.domain.hl7 import (APPLICATION_ERROR, CANCELLATIONS, NOT_AUTHORIZED, Header, Rejection,
                                        read_adt, read_header)
from reflexe_gateway.domain.pseudonym import pseudonymise
from reflexe_gateway.settings import Sender

log = logging.getLogger(__name__)
MAX_BACKOFF_SECONDS = 300


class Gateway:
    def __init__(self, store: st.MessageStore, senders: dict[str, Sender], pseudonym_key: bytes,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store, self._senders, self._key, self._now = store, senders, pseudonym_key, clock

    async def receive(self, payload: bytes, peer: str) -> bytes:
        """The ACK for one framed message. Never raises for any payload."""
        text = payload.decode("utf-8", errors="strict") if _is_utf8(payload) else payload.decode("latin-1")
        header: Header | None = None
        try:
            header = read_header(text)
            message = read_adt(text)
            sender = self._senders.get(message.finess)
            if sender is None or not sender.allows(peer):
                raise Rejection("AR", NOT_AUTHORIZED, "MSH^1^4", "this sender (MSH-4 FINESS and address) is not allowed")
            pseudonym = pseudonymise(self._key, message.patient_id, message.patient_authority)
            effect = effect_of(message, SenderKind(sender.kind))
            status = st.NO_EFFECT if effect is Effect.NONE else st.PENDING
            if effect is not Effect.UNDO and await self._store.cancellation_recorded(message.finess, pseudonym,
                                                                                       message.movement_id):
                status = st.CANCELLED  # its cancellation came first: kept, never applied
            recorded = await self._store.record(st.NewMessage(
                sender_finess=message.finess, control_id=message.header.control_id, ack_control_id=_ack_id(),
                trigger=message.trigger, effect=str(effect), pseudonym=pseudonym, event_at=message.event_at,
                movement_id=message.movement_id, referral_hint=message.referral_hint, status=status))
        except Rejection as rejection:
            return self._answer(header, rejection.ack, _ack_id(), (rejection.code, rejection.location, rejection.text))
        except (OSError, asyncpg.PostgresError, asyncio.TimeoutError) as exc:
            # Not recorded: AE so that the sender's system keeps the message and sends it again.
            log.error("message not recorded", extra={"error": type(exc).__name__})
            return self._answer(header, "AE", _ack_id(), (APPLICATION_ERROR, "MSH^1^10", "not recorded, send again"))
        if recorded.duplicate:
            metrics.DUPLICATES.inc()
        else:
            metrics.RECORDED.labels(message.trigger).inc()
        return self._answer(message.header, "AA", recorded.ack_control_id, None)

    def _answer(self, header: Header | None, code: str, ack_id: str, error) -> bytes:
        metrics.ACKS.labels(code).inc()
        return build_ack(header, code, ack_id, self._now(), error).encode("latin-1", errors="replace")


def _ack_id() -> str:
    return uuid.uuid4().hex[:20]


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False  # IHE PAM FR senders often use ISO 8859-1 (MSH-18 8859/1)


class Applier:
    """Carries out recorded effects, oldest event first; survives restarts (the queue is the
    table) and an unreachable referral service (retried with backoff)."""

    def __init__(self, pool: asyncpg.Pool, referrals: ReferralClient,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool, self._referrals, self._now = pool, referrals, clock

    async def run(self, poll_seconds: float) -> None:
        while True:
            try:
                worked = await self.apply_next()
                if not worked:
                    metrics.UNMATCHED.set(await self._pool.fetchval(
                        "SELECT count(*) FROM messages WHERE status = 'UNMATCHED'"))
                    await asyncio.sleep(poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("applying a message failed; will retry")
                await asyncio.sleep(poll_seconds)

    async def apply_next(self) -> bool:
        """Carry out the oldest due pending message; False when none is due."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM messages WHERE status = 'PENDING' AND next_attempt_at <= now() "
                "ORDER BY event_at, id LIMIT 1 FOR UPDATE SKIP LOCKED")
            if row is None:
                return False
            try:
                status, referral_id, detail = await self._carry_out(conn, row)
            except RetryLater as exc:
                metrics.APPLY_FAILURES.inc()
                delay = min(MAX_BACKOFF_SECONDS, 2 ** min(row["attempts"], 10))
                await conn.execute("UPDATE messages SET attempts = attempts + 1, detail = $2, "
                                   "next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                                   row["id"], str(exc)[:200], float(delay))
                return True
            await conn.execute("UPDATE messages SET status = $2, referral_id = $3, detail = $4, done_at = now(), "
                               "attempts = attempts + 1 WHERE id = $1", row["id"], status,
                               uuid.UUID(referral_id) if referral_id else None, detail)
            metrics.OUTCOMES.labels(status).inc()
            return True

    async def _carry_out(self, conn: asyncpg.Connection, row) -> tuple[str, str | None, str]:
        if row["effect"] == Effect.UNDO:
            return await self._undo(conn, row)
        answer = await self._referrals.report(
            f"{row['sender_finess']}/{row['control_id']}", row["sender_finess"], row["effect"], row["pseudonym"],
            str(row["referral_hint"]) if row["referral_hint"] else None, row["event_at"])
        outcome = answer.get("outcome")
        status = {"APPLIED": st.APPLIED, "MATCHED": st.MATCHED, "UNMATCHED": st.UNMATCHED}.get(outcome, st.REFUSED)
        return status, answer.get("referral_id"), answer.get("code") or ""

    async def _undo(self, conn: asyncpg.Connection, row) -> tuple[str, str | None, str]:
        """A11/A12/A13 (or ZBE-4 CANCEL): the cancelled movement is the same sender's and patient's
        one with the same ZBE-1, else the latest of the cancelled trigger before it."""
        cancelled_trigger = CANCELLATIONS.get(row["trigger"])
        target = await conn.fetchrow(
            "SELECT id, status, effect, referral_id FROM messages WHERE sender_finess = $1 AND pseudonym = $2 "
            "AND effect <> 'UNDO' AND id <> $3 AND (CASE WHEN $4 <> '' THEN movement_id = $4 "
            "ELSE trigger = $5 AND event_at <= $6 END) ORDER BY event_at DESC, id DESC LIMIT 1 FOR UPDATE",
            row["sender_finess"], row["pseudonym"], row["id"], row["movement_id"], cancelled_trigger or "",
            row["event_at"])
        if target is None:
            return st.NO_EFFECT, None, "the cancelled movement was not received (yet): it will not be applied"
        referral_id = str(target["referral_id"]) if target["referral_id"] else None
        if target["status"] == st.PENDING:
            await conn.execute("UPDATE messages SET status = 'CANCELLED', done_at = now() WHERE id = $1", target["id"])
            return st.APPLIED, None, "the cancelled movement was not carried out yet: it never will be"
        recorded = target["status"] == st.APPLIED or (target["status"] == st.MATCHED
                                                     and target["effect"] != Effect.ED_EXIT)
        if recorded:
            # Cancelling or admitting a referral, or its recorded ED exit, cannot be reversed by the
            # domain: a person decides. A repeated ED exit (MATCHED) recorded nothing.
            return st.NOT_UNDONE, referral_id, f"{target['effect']} cannot be undone automatically"
        return st.NO_EFFECT, referral_id, "the cancelled movement had no effect to undo"


