"""SQL of the notify schema: subscriptions, deliveries and their attempts, referrals' sources."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from reflexe_notify.domain.desk import DeskEvent
from reflexe_notify.domain.recipients import Recipient

# Wakes the dispatcher when deliveries are committed (NOTIFY is delivered at commit).
CHANNEL = "notify_deliveries"
_WEBHOOK_NAMESPACE = uuid.UUID("6f0c6b0e-3f6a-4d8e-9a57-1c0e5b7a2d41")


def webhook_id_for(origin: str, subscription_id: uuid.UUID) -> str:
    """Deterministic: the same event for the same subscription is always the same delivery."""
    return f"msg_{uuid.uuid5(_WEBHOOK_NAMESPACE, f'{origin}/{subscription_id}')}"


# ---------------------------------------------------------------- referrals


async def remember_referral(conn: asyncpg.Connection, referral_id: str, department: str, source_finess: str) -> None:
    await conn.execute(
        "INSERT INTO referrals (referral_id, department, source_finess) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        referral_id, department, source_finess,
    )


async def source_finess(conn: asyncpg.Connection, referral_id: str) -> str | None:
    return await conn.fetchval("SELECT source_finess FROM referrals WHERE referral_id = $1", referral_id)


async def remember_widening(conn: asyncpg.Connection, referral_id: str, departments: Sequence[str]) -> None:
    await conn.executemany(
        "INSERT INTO referral_widenings (referral_id, department) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        [(referral_id, d) for d in departments],
    )


async def widened_to(conn: asyncpg.Connection, referral_id: str) -> list[str]:
    """The neighbouring departments this referral's search was widened to, in the order widened."""
    rows = await conn.fetch("SELECT department FROM referral_widenings WHERE referral_id = $1 "
                            "ORDER BY widened_at, department", referral_id)
    return [r["department"] for r in rows]


@dataclass
class ReferralMemory:
    """What notify remembers of some referrals, read once for a batch of events and kept up to
    date in memory as the batch is routed (the writes go in `record_referral_memory`)."""
    sources: dict[str, str]  # referral → its source hospital's FINESS
    widenings: dict[str, list[str]]  # referral → the departments its search was widened to, in order
    concerned: dict[str, list[str]]  # referral → the HADs still part of it, by FINESS


async def referral_memory(conn: asyncpg.Connection, referral_ids: Sequence[str]) -> ReferralMemory:
    """Sources, widenings and concerned HADs of these referrals, in one statement."""
    memory = ReferralMemory({}, {}, {})
    if not referral_ids:
        return memory
    rows = await conn.fetch(
        "SELECT 1 AS part, referral_id, source_finess AS value, NULL::timestamptz AS at FROM referrals "
        "  WHERE referral_id = ANY($1::text[]) "
        "UNION ALL SELECT 2, referral_id, department, widened_at FROM referral_widenings "
        "  WHERE referral_id = ANY($1::text[]) "
        "UNION ALL SELECT 3, referral_id, had_finess, NULL FROM had_referrals "
        "  WHERE referral_id = ANY($1::text[]) AND concerned "
        "ORDER BY part, referral_id, at, value",
        list(referral_ids),
    )
    for row in rows:
        if row["part"] == 1:
            memory.sources[row["referral_id"]] = row["value"]
        elif row["part"] == 2:
            memory.widenings.setdefault(row["referral_id"], []).append(row["value"])
        else:
            memory.concerned.setdefault(row["referral_id"], []).append(row["value"])
    return memory


@dataclass(frozen=True)
class HadReferralChange:
    """An HAD's part in a referral as a batch leaves it. `opened_or_ended` (concerned then says
    which): the row is written whether it existed or not; otherwise only its last event moves,
    if the row exists."""
    had_finess: str
    referral_id: str
    department: str
    concerned: bool
    last_event: str
    opened_or_ended: bool


async def record_referral_memory(conn: asyncpg.Connection, referrals: Sequence[tuple[str, str, str]],
                                 widenings: Sequence[tuple[str, str]], changes: Sequence[HadReferralChange]) -> None:
    """New referrals (id, department, source FINESS), widenings (id, department) and HADs'
    parts: at most three statements for a whole batch, none when there is nothing to write."""
    if referrals:
        await conn.execute(
            "INSERT INTO referrals (referral_id, department, source_finess) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT DO NOTHING",
            *map(list, zip(*referrals)),
        )
    if widenings:
        await conn.execute(
            "INSERT INTO referral_widenings (referral_id, department) "
            "SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            *map(list, zip(*widenings)),
        )
    if changes:
        # Sorted by key: two batches writing the same rows lock them in the same order.
        ordered = sorted(changes, key=lambda c: (c.had_finess, c.referral_id))
        await conn.execute(
            "WITH c AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bool[]) "
            "           AS c(had_finess, referral_id, department, concerned, last_event, upsert)), "
            "updated AS (UPDATE had_referrals h SET last_event = c.last_event, updated_at = now() FROM c "
            "            WHERE NOT c.upsert AND h.had_finess = c.had_finess AND h.referral_id = c.referral_id) "
            "INSERT INTO had_referrals AS h (had_finess, referral_id, department, concerned, last_event, updated_at) "
            "SELECT had_finess, referral_id, department, concerned, last_event, now() FROM c WHERE upsert "
            "ON CONFLICT (had_finess, referral_id) DO UPDATE SET "
            "concerned = EXCLUDED.concerned, last_event = EXCLUDED.last_event, updated_at = now()",
            [c.had_finess for c in ordered], [c.referral_id for c in ordered], [c.department for c in ordered],
            [c.concerned for c in ordered], [c.last_event for c in ordered], [c.opened_or_ended for c in ordered],
        )


# ---------------------------------------------------------------- deliveries


async def enqueue(conn: asyncpg.Connection, origin: str, event_type: str, department: str | None, body: str,
                  recipients: Sequence[Recipient], attempt_limit: int) -> int:
    """One PENDING delivery per active subscription of these recipients wanting this type.

    `origin` (the event id) makes the webhook ids, so enqueuing twice changes nothing."""
    subscriptions = await conn.fetch(
        "SELECT id, recipient FROM subscriptions WHERE active AND recipient = ANY($1) "
        "AND (cardinality(event_types) = 0 OR $2 = ANY(event_types))",
        [str(r) for r in recipients], event_type,
    )
    if not subscriptions:
        return 0
    inserted = await conn.fetch(
        "INSERT INTO deliveries (webhook_id, subscription_id, recipient, department, event_type, body, attempt_limit) "
        "SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[]) AS s, "
        "LATERAL (SELECT $4::text, $5::text, $6::text, $7::int) AS c "
        "ON CONFLICT (webhook_id) DO NOTHING RETURNING 1",
        [webhook_id_for(origin, s["id"]) for s in subscriptions], [s["id"] for s in subscriptions],
        [s["recipient"] for s in subscriptions], department, event_type, body, attempt_limit,
    )
    if inserted:
        await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return len(inserted)


@dataclass(frozen=True)
class Planned:
    """A notice to deliver: one delivery per active subscription of these recipients wanting its type."""
    origin: str
    event_type: str
    department: str | None
    body: str
    recipients: Sequence[Recipient]


async def enqueue_all(conn: asyncpg.Connection, planned: Sequence[Planned], attempt_limit: int) -> int:
    """`enqueue` for a whole batch of notices, in two statements (the subscriptions, then the
    deliveries with the dispatcher's wake-up); the number of deliveries created."""
    wanted = sorted({str(r) for p in planned for r in p.recipients})
    if not wanted:
        return 0
    subscriptions = await conn.fetch(
        "SELECT id, recipient, event_types FROM subscriptions WHERE active AND recipient = ANY($1::text[])", wanted)
    if not subscriptions:
        return 0
    by_recipient: dict[str, list[asyncpg.Record]] = {}
    for s in subscriptions:
        by_recipient.setdefault(s["recipient"], []).append(s)
    rows: dict[str, tuple] = {}  # by webhook id: a notice told twice to one subscription is one delivery
    for p in planned:
        for recipient in dict.fromkeys(str(r) for r in p.recipients):
            for s in by_recipient.get(recipient, ()):
                if not s["event_types"] or p.event_type in s["event_types"]:
                    webhook_id = webhook_id_for(p.origin, s["id"])
                    rows.setdefault(webhook_id, (webhook_id, s["id"], recipient, p.department, p.event_type, p.body))
    if not rows:
        return 0
    columns = list(zip(*rows.values()))
    return await conn.fetchval(
        "WITH inserted AS (INSERT INTO deliveries (webhook_id, subscription_id, recipient, department, event_type, "
        "                                          body, attempt_limit) "
        "  SELECT w, s, r, d, t, b, $7::int FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], "
        "                                                $6::text[]) AS u(w, s, r, d, t, b) "
        "  ON CONFLICT (webhook_id) DO NOTHING RETURNING 1), "
        "counted AS (SELECT count(*) AS n FROM inserted) "
        "SELECT n FROM counted, LATERAL (SELECT pg_notify($8, '') WHERE n > 0) AS woken",
        *map(list, columns), attempt_limit, CHANNEL,
    ) or 0


@dataclass(frozen=True)
class Claimed:
    webhook_id: str
    subscription_id: uuid.UUID
    recipient: str
    department: str | None
    event_type: str
    body: str
    attempts: int  # including the one being made
    attempt_limit: int
    url: str
    secrets: list[str]  # sealed (adapters/secret_box.py): opened only to sign
    channel: str = "webhook"  # or "email", url then being mailto:<address>


async def claim_due(db: asyncpg.Connection | asyncpg.Pool, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due deliveries for one attempt each (one statement: atomic alone).

    The claim is committed before sending and only moves next_attempt_at past the attempt's
    timeout: if this process dies mid-send, the delivery falls due again by itself."""
    rows = await db.fetch(
        "WITH due AS (SELECT webhook_id FROM deliveries WHERE status = 'PENDING' AND next_attempt_at <= now() "
        "             ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) "
        "UPDATE deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2) "
        "FROM due, subscriptions s WHERE d.webhook_id = due.webhook_id AND s.id = d.subscription_id "
        "RETURNING d.webhook_id, d.subscription_id, d.recipient, d.department, d.event_type, d.body, "
        "          d.attempts, d.attempt_limit, s.url, s.secrets, s.channel",
        limit, lease_seconds,
    )
    return [Claimed(**dict(r)) for r in rows]


async def seconds_to_next_due(db: asyncpg.Connection | asyncpg.Pool) -> float | None:
    return await db.fetchval(
        "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8 FROM deliveries WHERE status = 'PENDING'"
    )


async def pending_count(db: asyncpg.Connection | asyncpg.Pool) -> int:
    return await db.fetchval("SELECT count(*) FROM deliveries WHERE status = 'PENDING'")


@dataclass(frozen=True)
class Attempted:
    """One attempt's result, to be recorded; `retry_in` (seconds) when it is to be tried again."""
    delivery: Claimed
    outcome: str  # domain.retry.Outcome's value
    started_at: datetime
    duration: float
    http_status: int | None
    error: str | None
    retry_in: float | None = None


async def record_attempts(conn: asyncpg.Connection, attempts: Sequence[Attempted]) -> None:
    """The log entries of many attempts, their deliveries marked DELIVERED or rescheduled, in
    three statements whatever their number (call in a transaction). Other outcomes (gone,
    failed) are the caller's, one by one: they are rare and tell the desk."""
    await conn.execute(
        "INSERT INTO delivery_attempts (webhook_id, attempt, started_at, duration_seconds, http_status, outcome, error) "
        "SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::float8[], $5::int[], $6::text[], $7::text[])",
        [a.delivery.webhook_id for a in attempts], [a.delivery.attempts for a in attempts],
        [a.started_at for a in attempts], [a.duration for a in attempts], [a.http_status for a in attempts],
        [a.outcome for a in attempts], [a.error for a in attempts],
    )
    delivered = [a.delivery.webhook_id for a in attempts if a.outcome == "delivered"]
    if delivered:
        # Even if the claim had lapsed and another attempt is under way: the receiver has it.
        await conn.execute(
            "UPDATE deliveries SET status = 'DELIVERED', delivered_at = now(), last_error = NULL "
            "WHERE webhook_id = ANY($1::text[]) AND status = 'PENDING'", delivered,
        )
    retried = [a for a in attempts if a.outcome == "retry"]
    if retried:
        # Guarded by the attempt number: a lapsed claim must not reschedule a newer attempt.
        await conn.execute(
            "UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => r.delay), last_error = r.error "
            "FROM unnest($1::text[], $2::int[], $3::float8[], $4::text[]) AS r(webhook_id, attempts, delay, error) "
            "WHERE d.webhook_id = r.webhook_id AND d.status = 'PENDING' AND d.attempts = r.attempts",
            [a.delivery.webhook_id for a in retried], [a.delivery.attempts for a in retried],
            [a.retry_in or 0.0 for a in retried], [a.error or "" for a in retried],
        )


async def mark_failed(conn: asyncpg.Connection, d: Claimed, error: str) -> bool:
    return bool(await conn.fetchval(
        "UPDATE deliveries SET status = 'FAILED', last_error = $3 "
        "WHERE webhook_id = $1 AND status = 'PENDING' AND attempts = $2 RETURNING 1",
        d.webhook_id, d.attempts, error,
    ))


async def deactivate_subscription(conn: asyncpg.Connection, subscription_id: uuid.UUID, why: str) -> None:
    """No more webhooks to it: the subscription is off and what was waiting is given up."""
    await conn.execute("UPDATE subscriptions SET active = false WHERE id = $1", subscription_id)
    await conn.execute(
        "UPDATE deliveries SET status = 'FAILED', last_error = $2 WHERE subscription_id = $1 AND status = 'PENDING'",
        subscription_id, why,
    )


async def list_deliveries(pool: asyncpg.Pool, *, recipient: str | None, department: str | None,
                          status: str | None, limit: int, offset: int = 0) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT webhook_id, subscription_id, recipient, department, event_type, status, attempts, next_attempt_at, "
        "       created_at, delivered_at, last_error, "
        "       (SELECT coalesce(jsonb_agg(jsonb_build_object('attempt', a.attempt, 'started_at', a.started_at, "
        "               'duration_seconds', a.duration_seconds, 'http_status', a.http_status, 'outcome', a.outcome, "
        "               'error', a.error) ORDER BY a.id), '[]'::jsonb) "
        "          FROM delivery_attempts a WHERE a.webhook_id = d.webhook_id)::text AS attempt_log "
        "FROM deliveries d WHERE ($1::text IS NULL OR recipient = $1) AND ($2::text IS NULL OR department = $2) "
        "AND ($3::text IS NULL OR status = $3) ORDER BY created_at DESC, webhook_id LIMIT $4 OFFSET $5",
        recipient, department, status, limit, offset,
    )
    return [dict(r) for r in rows]


async def get_delivery(pool: asyncpg.Pool, webhook_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT webhook_id, recipient, department, status FROM deliveries WHERE webhook_id = $1",
                               webhook_id)


async def requeue(pool: asyncpg.Pool, webhook_id: str, more_attempts: int) -> bool:
    """A FAILED delivery gets `more_attempts` fresh attempts, same webhook-id and body."""
    async with pool.acquire() as conn, conn.transaction():
        done = await conn.fetchval(
            "UPDATE deliveries d SET status = 'PENDING', next_attempt_at = now(), attempt_limit = attempts + $2 "
            "FROM subscriptions s WHERE d.webhook_id = $1 AND d.status = 'FAILED' AND s.id = d.subscription_id "
            "AND s.active RETURNING 1",
            webhook_id, more_attempts,
        )
        if done:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return bool(done)


# ---------------------------------------------------------------- subscriptions


class SubscriptionLimitReached(Exception):
    """The recipient already holds as many active subscriptions as allowed."""


async def create_subscription(pool: asyncpg.Pool, recipient: str, url: str, event_types: list[str],
                              sealed_secret: str | None, created_by: str, channel: str = "webhook",
                              limit: int | None = None) -> asyncpg.Record:
    """A webhook subscription (url, sealed secret) or an e-mail one (url = mailto:<address>, no
    secret); SubscriptionLimitReached when the recipient already has `limit` active ones."""
    async with pool.acquire() as conn, conn.transaction():
        if limit is not None:
            # Serialises the recipient's subscribing: two at once cannot both see room for one.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('notify.subscriptions:' || $1))", recipient)
            held = await conn.fetchval("SELECT count(*) FROM subscriptions WHERE active AND recipient = $1", recipient)
            if held >= limit:
                raise SubscriptionLimitReached(f"{recipient} already holds {held} active subscriptions (at most {limit})")
        return await conn.fetchrow(
            "INSERT INTO subscriptions (id, recipient, event_types, url, secrets, created_by, channel) "
            "VALUES ($1, $2, $3, $4, $5::text[], $6, $7) RETURNING *",
            uuid.uuid4(), recipient, event_types, url, [sealed_secret] if sealed_secret else [], created_by, channel,
        )


async def get_subscription(pool: asyncpg.Pool, subscription_id: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM subscriptions WHERE id = $1 AND active", subscription_id)


async def list_subscriptions(pool: asyncpg.Pool, recipient: str | None, limit: int, offset: int = 0) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM subscriptions WHERE active AND ($1::text IS NULL OR recipient = $1) ORDER BY created_at, id "
        "LIMIT $2 OFFSET $3",
        recipient, limit, offset,
    )


async def add_secret(pool: asyncpg.Pool, subscription_id: uuid.UUID, sealed_secret: str) -> asyncpg.Record | None:
    """Start a rotation; None when one is already under way."""
    return await pool.fetchrow(
        "UPDATE subscriptions SET secrets = array_append(secrets, $2::text) WHERE id = $1 AND active "
        "AND channel = 'webhook' AND cardinality(secrets) = 1 "
        "RETURNING *", subscription_id, sealed_secret,
    )


async def drop_old_secret(pool: asyncpg.Pool, subscription_id: uuid.UUID) -> asyncpg.Record | None:
    """Finish a rotation; None when none is under way."""
    return await pool.fetchrow(
        "UPDATE subscriptions SET secrets = secrets[2:2] WHERE id = $1 AND active AND cardinality(secrets) = 2 "
        "RETURNING *", subscription_id,
    )


async def delete_subscription(pool: asyncpg.Pool, subscription_id: uuid.UUID) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await deactivate_subscription(conn, subscription_id, "subscription deleted")


# ---------------------------------------------------------------- secrets at rest

SEALED_CONSTRAINT = "subscriptions_secrets_sealed"


async def reseal_secrets(conn: asyncpg.Connection, reseal: Callable[[str], str], plaintext_only: bool) -> int:
    """Rewrite stored secrets through `reseal` (in the caller's transaction, rows locked); the
    number of subscriptions rewritten. `plaintext_only`: only those stored before sealing."""
    rows = await conn.fetch(
        "SELECT id, secrets FROM subscriptions WHERE cardinality(secrets) > 0 "
        "AND (NOT $1 OR secrets[1] LIKE 'whsec\\_%' OR coalesce(secrets[2], '') LIKE 'whsec\\_%') "
        "ORDER BY id FOR UPDATE", plaintext_only,
    )
    for row in rows:
        await conn.execute("UPDATE subscriptions SET secrets = $2::text[] WHERE id = $1",
                           row["id"], [reseal(s) for s in row["secrets"]])
    return len(rows)


async def validate_sealed_constraint(conn: asyncpg.Connection) -> bool:
    """Make the database check every stored row is sealed (migration 004 added the check for new
    rows only); True when it was validated now."""
    validated = await conn.fetchval(
        "SELECT convalidated FROM pg_constraint WHERE conname = $1 AND conrelid = 'subscriptions'::regclass",
        SEALED_CONSTRAINT,
    )
    if validated is False:
        await conn.execute(f"ALTER TABLE subscriptions VALIDATE CONSTRAINT {SEALED_CONSTRAINT}")
        return True
    return False


# ---------------------------------------------------------------- the desks' live stream

# Carries "department\nseq\npayload" (payload left out when too long for a notification).
DESK_CHANNEL = "notify_desk_events"
_NOTIFY_MAX = 7500  # PostgreSQL refuses notification payloads of 8000 bytes or more


async def append_desk_event(conn: asyncpg.Connection, event: DeskEvent) -> int | None:
    """Number the event in its department's stream and store it; None if already there.

    Runs in the caller's transaction. The counter row's lock is held to commit, so a
    department's entries commit in the order of their numbers."""
    if not event.department:
        return None
    seq = await conn.fetchval(
        "INSERT INTO desk_stream_heads AS h (department, last_seq) VALUES ($1, 1) "
        "ON CONFLICT (department) DO UPDATE SET last_seq = h.last_seq + 1 RETURNING last_seq",
        event.department,
    )
    payload = json.dumps(event.payload(seq), separators=(",", ":"), ensure_ascii=False)
    stored = await conn.fetchval(
        "INSERT INTO desk_events (department, seq, origin, type, alert, occurred_at, payload) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (department, origin) DO NOTHING RETURNING seq",
        event.department, seq, event.origin, event.kind, event.alert, event.occurred_at, payload,
    )
    if stored is None:  # already told: give the number back (the row lock is still ours)
        await conn.execute("UPDATE desk_stream_heads SET last_seq = last_seq - 1 WHERE department = $1",
                           event.department)
        return None
    message = f"{event.department}\n{seq}\n{payload}"
    if len(message.encode()) > _NOTIFY_MAX:
        message = f"{event.department}\n{seq}\n"
    await conn.execute("SELECT pg_notify($1, $2)", DESK_CHANNEL, message)
    return seq


@dataclass(frozen=True)
class StreamEntry:
    """A stream entry as committed: the live readers of its stream may be told it as it is."""
    stream: str  # a department, or had:<FINESS>
    seq: int
    payload: str


async def append_desk_events(conn: asyncpg.Connection, events: Sequence[DeskEvent]) -> list[StreamEntry]:
    """`append_desk_event` for a whole batch in two statements: numbers for the entries not
    already stored (each stream's counter moved once, streams locked in sorted order), then the
    entries stored and notified. Returns what was stored, in each stream's order."""
    events = list({(e.department, e.origin): e for e in events if e.department}.values())
    if not events:
        return []
    numbered = await conn.fetch(
        "WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS w(department, origin, ord)), "
        "fresh AS (SELECT w.* FROM wanted w WHERE NOT EXISTS "
        "          (SELECT 1 FROM desk_events e WHERE e.department = w.department AND e.origin = w.origin)), "
        "counts AS (SELECT department, count(*) AS n FROM fresh GROUP BY department), "
        "heads AS (INSERT INTO desk_stream_heads AS h (department, last_seq) "
        "          SELECT department, n FROM counts ORDER BY department "
        "          ON CONFLICT (department) DO UPDATE SET last_seq = h.last_seq + EXCLUDED.last_seq "
        "          RETURNING h.department, h.last_seq) "
        "SELECT f.ord, heads.last_seq - c.n + row_number() OVER (PARTITION BY f.department ORDER BY f.ord) AS seq "
        "FROM fresh f JOIN counts c USING (department) JOIN heads USING (department)",
        [e.department for e in events], [e.origin for e in events],
    )
    if not numbered:
        return []
    chosen = [(events[r["ord"] - 1], r["seq"]) for r in numbered]
    payloads = [json.dumps(e.payload(seq), separators=(",", ":"), ensure_ascii=False) for e, seq in chosen]
    stored = await conn.fetch(
        "WITH stored AS (INSERT INTO desk_events (department, seq, origin, type, alert, occurred_at, payload) "
        "  SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::bool[], $6::timestamptz[], "
        "                       $7::text[]) "
        "  ON CONFLICT (department, origin) DO NOTHING RETURNING department, seq, payload), "
        "ordered AS (SELECT * FROM stored ORDER BY department, seq OFFSET 0) "
        "SELECT department, seq, payload, pg_notify($8, department || E'\\n' || seq || E'\\n' || "
        "  CASE WHEN octet_length(payload) + octet_length(department) + 24 > $9 THEN '' ELSE payload END) "
        "FROM ordered",
        [e.department for e, _ in chosen], [seq for _, seq in chosen], [e.origin for e, _ in chosen],
        [e.kind for e, _ in chosen], [e.alert for e, _ in chosen], [e.occurred_at for e, _ in chosen], payloads,
        DESK_CHANNEL, _NOTIFY_MAX,
    )
    return [StreamEntry(r["department"], r["seq"], r["payload"]) for r in stored]


async def desk_events_after(pool: asyncpg.Pool, department: str, after_seq: int, limit: int = 500) -> list[tuple[int, str]]:
    rows = await pool.fetch(
        "SELECT seq, payload FROM desk_events WHERE department = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        department, after_seq, limit,
    )
    return [(r["seq"], r["payload"]) for r in rows]


async def desk_head(pool: asyncpg.Pool, department: str) -> int:
    return await pool.fetchval("SELECT coalesce(max(last_seq), 0) FROM desk_stream_heads WHERE department = $1",
                               department)


async def desk_alerts(pool: asyncpg.Pool, department: str, limit: int = 50) -> list[dict]:
    rows = await pool.fetch(
        "SELECT payload FROM desk_events WHERE department = $1 AND alert ORDER BY seq DESC LIMIT $2", department, limit,
    )
    return [json.loads(r["payload"]) for r in rows]


async def prune_desk_events(pool: asyncpg.Pool, keep_days: float) -> int:
    """Entries older than the retention go (the counter rows stay: numbers never restart)."""
    done = await pool.execute("DELETE FROM desk_events WHERE recorded_at < now() - make_interval(secs => $1)",
                              keep_days * 86400)
    # A referral is settled long before its stream entries age out: its neighbours stop following it.
    await pool.execute("DELETE FROM referral_widenings WHERE widened_at < now() - make_interval(secs => $1)",
                       keep_days * 86400)
    return int(done.split()[-1])
