"""The retention job on the real PostgreSQL: published outbox rows, settled relay batches,
processed inbox rows and settled deliveries' attempts older than their age go, in small
batches; newer rows, unpublished events, batches in flight, pending deliveries' attempts and
the audit trail stay; the counter counts what went."""

from __future__ import annotations

import json
import uuid

import asyncpg
import pytest
from prometheus_client import REGISTRY

from reflexe_common.retention import RetentionJob, RetentionSettings, delivery_attempts_purge, platform_purges
from tests.support.schema import own_schema

pytestmark = pytest.mark.integration
OLD, NEW = "now() - interval '10 days'", "now() - interval '1 hour'"


def purged(table: str) -> float:
    return REGISTRY.get_sample_value("reflexe_retention_purged_rows_total", {"table": table}) or 0.0


@pytest.fixture
async def notify_like_schema(infra):
    """A schema of its own with the platform tables and notify's (deliveries and their attempts)."""
    async with own_schema(infra.database_url, "retention", "reflexe_notify.migrations", max_size=3) as (schema, pool):
        yield pool, schema


async def outbox_row(conn: asyncpg.Connection, published_at: str | None) -> int:
    return await conn.fetchval(
        f"INSERT INTO outbox (event_id, topic, key, headers, payload, created_at, published_at) "
        f"VALUES ($1, 't', 'k', '[]', '\\x00', now() - interval '20 days', {published_at or 'NULL'}) RETURNING id",
        uuid.uuid4())


async def delivery(conn: asyncpg.Connection, status: str, attempts_started: list[str]) -> str:
    subscription = await conn.fetchval(
        "INSERT INTO subscriptions (id, recipient, url, secrets, created_by) VALUES ($1, 'had:340000017', "
        "'https://had.example/hook', ARRAY['sealed:test-secret'], 'test') RETURNING id", uuid.uuid4())
    webhook_id = f"msg_{uuid.uuid4()}"
    await conn.execute("INSERT INTO deliveries (webhook_id, subscription_id, recipient, event_type, body, status, "
                       "attempt_limit) VALUES ($1, $2, 'had:340000017', 't', '{}', $3, 8)", webhook_id, subscription, status)
    for n, started in enumerate(attempts_started, 1):
        await conn.execute(f"INSERT INTO delivery_attempts (webhook_id, attempt, started_at, duration_seconds, outcome) "
                           f"VALUES ($1, $2, {started}, 0.1, 'retry')", webhook_id, n)
    return webhook_id


async def test_old_settled_rows_go_and_everything_else_stays(notify_like_schema):
    pool, schema = notify_like_schema
    async with pool.acquire() as conn:
        old_published = [await outbox_row(conn, OLD) for _ in range(5)]
        new_published = await outbox_row(conn, NEW)
        unpublished = await outbox_row(conn, None)  # older than any age, never published: must stay
        for state, created in (("DONE", OLD), ("ABORTED", OLD), ("SENDING", OLD), ("DONE", NEW)):
            await conn.execute(f"INSERT INTO outbox_batches (batch_id, outbox_ids, probe_topic, probe_partition, "
                               f"probe_offset, state, created_at) VALUES ($1, '{{1}}', 't', 0, 0, $2, {created})",
                               uuid.uuid4(), state)
        for i in range(3):
            await conn.execute(f"INSERT INTO inbox (consumer, event_id, processed_at) VALUES ('c', $1, {OLD})", f"old-{i}")
        await conn.execute(f"INSERT INTO inbox (consumer, event_id, processed_at) VALUES ('c', 'new', {NEW})")
        settled = await delivery(conn, "DELIVERED", [OLD, OLD, NEW])
        pending = await delivery(conn, "PENDING", [OLD])
        await conn.execute(f"INSERT INTO audit_trail (at, subject, action, status, code) "
                           f"VALUES ({OLD} - interval '1000 days', 'someone', 'GET /v1/x', 200, 'OK')")

    settings = RetentionSettings(RETENTION_OUTBOX_DAYS=7, RETENTION_INBOX_DAYS=7, RETENTION_DELIVERY_ATTEMPTS_DAYS=7,
                                 RETENTION_BATCH_SIZE=2)  # batches of 2: five old outbox rows take three
    job = RetentionJob(pool, schema, platform_purges(settings) + [delivery_attempts_purge(settings)], settings)
    before = {t: purged(t) for t in ("outbox", "outbox_batches", "inbox", "delivery_attempts")}

    assert await job.run_once() == {"outbox": 5, "outbox_batches": 2, "inbox": 3, "delivery_attempts": 2}

    assert {t: purged(t) - before[t] for t in before} == {"outbox": 5, "outbox_batches": 2, "inbox": 3,
                                                          "delivery_attempts": 2}
    async with pool.acquire() as conn:
        assert sorted(r["id"] for r in await conn.fetch("SELECT id FROM outbox")) == [new_published, unpublished]
        assert not set(old_published) & {r["id"] for r in await conn.fetch("SELECT id FROM outbox")}
        assert sorted(r["state"] for r in await conn.fetch("SELECT state FROM outbox_batches")) == ["DONE", "SENDING"]
        assert [r["event_id"] for r in await conn.fetch("SELECT event_id FROM inbox")] == ["new"]
        attempts = {(r["webhook_id"], r["attempt"]) for r in await conn.fetch("SELECT webhook_id, attempt FROM delivery_attempts")}
        assert attempts == {(settled, 3), (pending, 1)}
        assert await conn.fetchval("SELECT count(*) FROM audit_trail") == 1

    # Nothing left to purge: a second run deletes nothing and counts nothing.
    assert await job.run_once() == {"outbox": 0, "outbox_batches": 0, "inbox": 0, "delivery_attempts": 0}
    assert purged("outbox") - before["outbox"] == 5


async def test_one_replica_purges_a_schema_at_a_time(notify_like_schema):
    pool, schema = notify_like_schema
    settings = RetentionSettings()
    job = RetentionJob(pool, schema, platform_purges(settings), settings)
    async with pool.acquire() as other_replica:
        await other_replica.execute("SELECT pg_advisory_lock(7263005, hashtext($1))", schema)
        assert await job.run_once() is None  # skipped: the other replica is at it
        await other_replica.execute("SELECT pg_advisory_unlock(7263005, hashtext($1))", schema)
    assert json.dumps(await job.run_once()) == json.dumps({"outbox": 0, "outbox_batches": 0, "inbox": 0})
