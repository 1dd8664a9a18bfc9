"""Webhook secrets at rest over the service's life, with the service as its own process on the
real Kafka and PostgreSQL: a secret stored in plaintext before migration 004 is sealed when the
service starts, and a key rotation (new key first, `python -m reflexe_notify.rotate_secrets`,
old key dropped) keeps every webhook verifiable with the subscriber's unchanged secret."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from cryptography.fernet import Fernet

from reflexe_common.webhook_secrets import generate_secret
from reflexe_notify.adapters.secret_box import SecretBox, SecretUnreadable
from tests.integration.notify.kit import offer_proposed, publish
from tests.support.data import unique_finess
from tests.support.infra import Infra
from tests.support.receiver import WebhookReceiver, verify
from tests.support.services import NOTIFY_TEST_KEY, REPO_ROOT, ServiceProcess, eventually, service_env, token
from tests.support.territory import own_department

pytestmark = pytest.mark.integration
DEPARTMENT = own_department()


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(infra.database_url, server_settings={"search_path": "notify"})
    yield conn
    await conn.close()


def rotate_secrets(infra: Infra, keys: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **service_env(infra), "NOTIFY_SECRET_KEYS": keys}
    return subprocess.run([sys.executable, "-m", "reflexe_notify.rotate_secrets"], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


async def stored_secret(db: asyncpg.Connection, subscription_id: uuid.UUID) -> str:
    [value] = await db.fetchval("SELECT secrets FROM subscriptions WHERE id = $1", subscription_id)
    return value


async def test_plaintext_secrets_are_sealed_at_migration_and_webhooks_verify_across_a_key_rotation(
        infra: Infra, producer: AIOKafkaProducer, receiver: WebhookReceiver, db: asyncpg.Connection, tmp_path: Path) -> None:
    new_key = Fernet.generate_key().decode()

    async def started(keys: str) -> ServiceProcess:
        notify = ServiceProcess("reflexe_notify", service_env(infra, NOTIFY_SECRET_KEYS=keys), "NOTIFY_HTTP_PORT",
                                tmp_path).start()
        await notify.wait_ready()
        return notify

    async def webhook_arrives(n: int) -> None:
        await publish(producer, offer_proposed(DEPARTMENT, had))
        await eventually(lambda: len(receiver.received) == n, timeout=60, what=f"webhook {n}")

    # The schema as the previous version left it: migration 004 not applied, a subscription whose
    # secret is in plaintext. (The service runs once first, so that every other migration is there.)
    (await started(NOTIFY_TEST_KEY)).stop()
    await db.execute("ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_secrets_sealed")
    await db.execute("DELETE FROM schema_migrations WHERE name = '004_sealed_secrets.sql'")
    await db.execute("UPDATE subscriptions SET active = false")  # other tests' receivers are gone
    had, secret, subscription_id = unique_finess(), generate_secret(), uuid.uuid4()
    await db.execute(
        "INSERT INTO subscriptions (id, recipient, url, secrets, created_by) VALUES ($1, $2, $3, ARRAY[$4], 'legacy')",
        subscription_id, f"had:{had}", receiver.url, secret)

    notify = await started(NOTIFY_TEST_KEY)
    try:
        sealed = await stored_secret(db, subscription_id)
        assert sealed != secret and secret not in sealed
        assert SecretBox([NOTIFY_TEST_KEY]).open(sealed) == secret
        assert await db.fetchval("SELECT convalidated FROM pg_constraint WHERE conname = 'subscriptions_secrets_sealed'")
        await webhook_arrives(1)
        assert verify(secret, receiver.received[0].headers, receiver.received[0].body)["type"] == "offer.proposed"
    finally:
        notify.stop()

    # Rotation: the new key first, the command, then the old key gone.
    done = rotate_secrets(infra, f"{new_key},{NOTIFY_TEST_KEY}")
    assert done.returncode == 0, done.stderr
    resealed = await stored_secret(db, subscription_id)
    assert SecretBox([new_key]).open(resealed) == secret
    with pytest.raises(SecretUnreadable):
        SecretBox([NOTIFY_TEST_KEY]).open(resealed)

    notify = await started(new_key)
    try:
        await webhook_arrives(2)
        assert verify(secret, receiver.received[1].headers, receiver.received[1].body)["type"] == "offer.proposed"
        async with httpx.AsyncClient(base_url=notify.url) as api:  # what it seals now, it seals with the new key
            created = await api.post("/v1/subscriptions", json={"url": f"{receiver.url}/2"},
                                     headers=token("had", finess=had))
        assert created.status_code == 201, created.text
        fresh = await stored_secret(db, uuid.UUID(created.json()["id"]))
        assert SecretBox([new_key]).open(fresh) == created.json()["secret"]
    finally:
        notify.stop()

    # Without the key that sealed them, the command changes nothing and says why.
    refused = rotate_secrets(infra, NOTIFY_TEST_KEY)
    assert refused.returncode == 1 and "nothing changed" in refused.stderr
    assert await stored_secret(db, subscription_id) == resealed
    # Back under the suite's key, for the tests that run after this one.
    back = rotate_secrets(infra, f"{NOTIFY_TEST_KEY},{new_key}")
    assert back.returncode == 0, back.stderr
    await db.execute("UPDATE subscriptions SET active = false WHERE recipient = $1", f"had:{had}")
