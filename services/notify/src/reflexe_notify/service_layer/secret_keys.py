"""Webhook secrets at rest: sealing those stored in plaintext (at startup) and re-sealing every one
under the first key of NOTIFY_SECRET_KEYS (key rotation, `python -m reflexe_notify.rotate_secrets`)."""

from __future__ import annotations

import logging

import asyncpg

from reflexe_notify.adapters import store
from reflexe_notify.adapters.secret_box import SecretBox

log = logging.getLogger(__name__)
_LOCK = "notify.secret_keys"  # one sealing or rotation at a time across processes


async def seal_plaintext_secrets(pool: asyncpg.Pool, box: SecretBox) -> int:
    """Completes migration 004: seals the secrets stored before it, then has the database check
    that none is left. Runs at every start, before the API and the dispatcher; cheap when done."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        sealed = await store.reseal_secrets(conn, box.reseal, plaintext_only=True)
        await store.validate_sealed_constraint(conn)
    if sealed:
        log.info("plaintext webhook secrets sealed", extra={"subscriptions": sealed})
    return sealed


async def rotate_secret_keys(pool: asyncpg.Pool, box: SecretBox) -> int:
    """Re-seals every stored secret under the first key, so that the other keys can be dropped.
    One transaction: all or nothing. Raises SecretUnreadable when a secret opens with no key."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", _LOCK)
        count = await store.reseal_secrets(conn, box.reseal, plaintext_only=False)
        await store.validate_sealed_constraint(conn)
    log.info("webhook secrets re-sealed under the first key", extra={"subscriptions": count})
    return count
