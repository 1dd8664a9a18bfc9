"""The notify service killed (SIGKILL) in the middle of a burst loses no notification.

It runs as a separate process. The receiver may see a webhook twice only when it was in flight
at the kill (sent, not yet recorded); after deduplication by webhook-id it sees every
notification exactly once, and every delivery ends DELIVERED.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.notify.kit import NOTIFY_TEST_ENV, offer_proposed, publish
from tests.support.data import unique_finess
from tests.support.infra import Infra
from tests.support.issuer import suite_issuer
from tests.support.receiver import WebhookReceiver, verify
from tests.support.services import bearer, eventually, free_port
from tests.support.territory import own_department

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
BURST = 200
CONCURRENCY = 4
DEPARTMENT = own_department()  # only this module's: its desk receives this module's burst alone


class NotifyProcess:
    """`python -m reflexe_notify` with its output in a log file (read it when a test fails)."""

    def __init__(self, infra: Infra, log_dir: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._env = dict(os.environ, KAFKA_BOOTSTRAP=infra.kafka_bootstrap, DATABASE_URL=infra.database_url,
                         OIDC_ISSUER=suite_issuer().url, NOTIFY_HTTP_PORT=str(self.port), NOTIFY_CONCURRENCY=str(CONCURRENCY),
                         NOTIFY_TIMEOUT_SECONDS="1", NOTIFY_BACKOFF_BASE_SECONDS="0.1", LOG_LEVEL="WARNING",
                         **NOTIFY_TEST_ENV)
        self._log_dir = log_dir
        self._runs = 0
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self._runs += 1
        log = open(self._log_dir / f"notify-{self._runs}.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "reflexe_notify"], env=self._env, stdout=log,
                                        stderr=subprocess.STDOUT)

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.process.poll() is None, f"notify exited with {self.process.returncode}"
            try:
                async with httpx.AsyncClient() as c:
                    return (await c.get(f"{self.base_url}/readyz", timeout=2)).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(answers, timeout=60, interval=0.1, what="notify /readyz")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def notify(infra: Infra, tmp_path: Path) -> Iterator[NotifyProcess]:
    service = NotifyProcess(infra, tmp_path)
    yield service
    service.stop()


@pytest.fixture
async def slow_receiver() -> AsyncIterator[WebhookReceiver]:
    r = await WebhookReceiver(delay_seconds=0.02).start()
    yield r
    await r.stop()


async def test_sigkill_mid_burst_loses_nothing_and_sends_nothing_acknowledged_twice(
        infra: Infra, producer: AIOKafkaProducer, notify: NotifyProcess, slow_receiver: WebhookReceiver) -> None:
    db = await asyncpg.connect(infra.database_url, server_settings={"search_path": "notify"})
    try:
        notify.start()
        await notify.ready()
        # Subscriptions left by other tests point at receivers that are gone: keep them out.
        await db.execute("UPDATE subscriptions SET active = false")
        had = unique_finess()
        async with httpx.AsyncClient(base_url=notify.base_url) as api:
            created = await api.post("/v1/subscriptions", json={"url": slow_receiver.url},
                                     headers={"Authorization": f"Bearer {bearer('had', finess=had)}"})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]

        offers = [offer_proposed(DEPARTMENT, had) for _ in range(BURST)]
        for offer in offers:
            await publish(producer, offer)
        await eventually(lambda: len(slow_receiver.received) >= BURST // 4, timeout=60, interval=0.002,
                         what="a quarter of the burst")
        notify.kill()
        seen_at_kill = len(slow_receiver.distinct_ids())
        assert seen_at_kill < BURST, "the burst was over before the kill: nothing was tested"

        notify.start()
        await notify.ready()
        await eventually(lambda: len(slow_receiver.distinct_ids()) == BURST, timeout=120, interval=0.05,
                         what="every notification")

        async def all_delivered() -> bool:
            return await db.fetchval(
                "SELECT count(*) FILTER (WHERE status = 'DELIVERED') = $2 AND count(*) = $2 FROM deliveries "
                "WHERE recipient = $1", f"had:{had}", BURST)

        await eventually(all_delivered, timeout=60, interval=0.05, what="every delivery DELIVERED")
    finally:
        await db.close()

    offers_received = Counter()
    for r in slow_receiver.received:
        body = verify(secret, r.headers, r.body)
        offers_received[body["data"]["offer_id"]] += 1
    assert set(offers_received) == {o.offer_id for o in offers}
    per_webhook = Counter(r.webhook_id for r in slow_receiver.received)
    duplicates = sum(n - 1 for n in per_webhook.values())
    # Only what was in flight at the kill (sent, outcome not recorded) may be sent again.
    assert duplicates <= CONCURRENCY, per_webhook.most_common(CONCURRENCY + 1)
    print(f"\nkilled after {seen_at_kill}/{BURST} webhooks; duplicates after restart: {duplicates}")
