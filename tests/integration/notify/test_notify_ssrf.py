"""Webhooks cannot reach inside, on the real service (Kafka, PostgreSQL, HTTP receivers).

The service runs as deployed for local development: plain http allowed and 127.0.0.1/32 (the
tests' receivers) admitted, nothing else. An "internal" service is played by a receiver on
127.0.0.2: a loopback address outside the allow-list. Host names are answered by a resolver
under the test's control, the way an attacker controls the DNS of their own domain.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from reflexe_common.webhook_secrets import generate_secret
from reflexe_notify.adapters.secret_box import SecretBox
from reflexe_notify.adapters.webhook_http import system_resolver
from reflexe_notify.entrypoints.app import build_app
from tests.integration.notify.kit import NOTIFY_TEST_ENV, notify_settings, offer_proposed, publish
from tests.support.data import unique_finess
from tests.support.infra import Infra
from tests.support.receiver import WebhookReceiver, verify
from tests.support.services import eventually, token

pytestmark = pytest.mark.integration
LIMIT = 3
MAX_ATTEMPTS = 3
INTERNAL_HOST = "127.0.0.2"
_departments = iter(["81", "82", "83", "84", "85", "86", "87", "88", "89"])


class ScriptedResolver:
    """DNS under the test's control. A scripted name answers its answers in turn, one per lookup,
    the last one repeating; any other name goes to the system resolver."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[list[str]]] = {}
        self.lookups: Counter[str] = Counter()

    def script(self, host: str, *answers: list[str]) -> None:
        self.scripts[host] = list(answers)

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups[host] += 1
        if host in self.scripts:
            answers = self.scripts[host]
            return answers[min(self.lookups[host], len(answers)) - 1]
        return await system_resolver(host, port)


@pytest.fixture(scope="module")
def dns() -> ScriptedResolver:
    return ScriptedResolver()


@pytest.fixture(scope="module")
async def app(infra: Infra, producer: AIOKafkaProducer, dns: ScriptedResolver) -> AsyncIterator[Any]:
    settings = notify_settings(infra, NOTIFY_MAX_ATTEMPTS=MAX_ATTEMPTS, NOTIFY_TIMEOUT_SECONDS=2,
                               NOTIFY_MAX_SUBSCRIPTIONS_PER_RECIPIENT=LIMIT)
    application = build_app(settings, resolver=dns)
    async with application.router.lifespan_context(application):
        # Subscriptions of other modules point at receivers that are gone.
        await application.state.pool.execute("UPDATE subscriptions SET active = false")
        yield application


@pytest.fixture(scope="module", autouse=True)
async def consumer_is_running(app: Any, client: httpx.AsyncClient, producer: AIOKafkaProducer) -> None:
    """One round trip first: the consumer group has joined and the dispatcher runs."""
    r = await WebhookReceiver().start()
    try:
        had = unique_finess()
        await subscribe(client, r.url, had)
        await publish(producer, offer_proposed("80", had))
        await eventually(lambda: r.received, timeout=60, what="the warm-up webhook")
    finally:
        await r.stop()


async def subscribe(client: httpx.AsyncClient, url: str, had: str, **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/subscriptions", json={"url": url, **body}, headers=token("had", finess=had))
    assert response.status_code == 201, response.text
    return response.json()


async def delivery_log(client: httpx.AsyncClient, had: str) -> list[dict[str, Any]]:
    response = await client.get("/v1/deliveries", params={"limit": 100}, headers=token("had", finess=had))
    assert response.status_code == 200, response.text
    return response.json()


async def settled(client: httpx.AsyncClient, had: str, status: str, attempts: int) -> dict[str, Any]:
    """The had's one delivery once it has this status after this many attempts."""
    async def probe() -> dict[str, Any] | None:
        log = await delivery_log(client, had)
        if log and log[0]["status"] == status and len(log[0]["attempt_log"]) == attempts:
            return log[0]
        return None

    return await eventually(probe, what=f"a {status} delivery after {attempts} attempts")


async def test_internal_urls_are_refused_at_subscription_naming_body_url(
        client: httpx.AsyncClient, receivers: Any, dns: ScriptedResolver) -> None:
    internal = await receivers(host=INTERNAL_HOST)
    dns.script("metadata.attacker.test", ["169.254.169.254"])
    dns.script("intranet.attacker.test", ["10.0.0.5"])
    dns.script("half.attacker.test", ["93.184.216.34", "127.0.0.2"])  # one public answer is not enough
    had = unique_finess()
    refused = [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://metadata.attacker.test/latest/meta-data/",
        internal.url,
        f"http://2130706434:{internal.port}/hooks",  # 127.0.0.2 in decimal
        f"http://0x7f000002:{internal.port}/hooks",  # in hexadecimal
        f"http://[::ffff:127.0.0.2]:{internal.port}/hooks",
        "http://[::1]:8001/v1/referrals",
        "http://0.0.0.0:8001/",
        f"http://intranet.attacker.test:{internal.port}/",
        f"http://half.attacker.test:{internal.port}/",
        "http://10.1.2.3/", "http://172.16.0.1/", "http://192.168.1.1/", "http://100.64.0.1/",
        "http://224.0.0.1/", "http://[fe80::1]/", "http://[fd00::1]/",
    ]
    for url in refused:
        response = await client.post("/v1/subscriptions", json={"url": url}, headers=token("had", finess=had))
        assert response.status_code == 422, (url, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "WEBHOOK_URL_REFUSED", (url, problem)
        assert [e["field"] for e in problem["errors"]] == ["body.url"]
        assert "the host resolves to" in problem["errors"][0]["message"]
        assert "127.0.0.2" not in problem["errors"][0]["message"]  # the category, not the address
    unknown = await client.post("/v1/subscriptions", json={"url": "http://no-such-host.invalid/hooks"},
                                headers=token("had", finess=had))
    assert unknown.status_code == 422 and unknown.json()["code"] == "WEBHOOK_HOST_UNRESOLVED"
    assert [e["field"] for e in unknown.json()["errors"]] == ["body.url"]

    listed = await client.get("/v1/subscriptions", headers=token("had", finess=had))
    assert listed.json() == []
    assert internal.received == []


async def test_a_name_re_pointed_inside_after_subscribing_is_refused_at_delivery_and_never_sent(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, dns: ScriptedResolver) -> None:
    department, had = next(_departments), unique_finess()
    internal, desk = await receivers(host=INTERNAL_HOST), await receivers()
    # Public when the subscription is checked, then the attacker's DNS answers with an inside address.
    dns.script("rebind.attacker.test", ["93.184.216.34"], [INTERNAL_HOST])
    await subscribe(client, f"http://rebind.attacker.test:{internal.port}/hooks", had)
    response = await client.post("/v1/subscriptions", json={"url": desk.url, "event_types": ["delivery.failed"]},
                                 headers=token("desk", department=department))
    assert response.status_code == 201, response.text
    await publish(producer, offer_proposed(department, had))

    failed = await settled(client, had, "FAILED", 1)  # at once: a retry would be refused again
    [attempt] = failed["attempt_log"]
    assert attempt["outcome"] == "failed" and attempt["http_status"] is None
    assert attempt["error"] == failed["last_error"] == "refused: the host resolves to a loopback address"
    await eventually(lambda: desk.received, what="delivery.failed to the desk")
    assert json.loads(desk.received[0].body)["data"]["webhook_id"] == failed["webhook_id"]
    assert dns.lookups["rebind.attacker.test"] == 2  # at subscription, then before the attempt

    # A manual retry is checked again, and refused again.
    retried = await client.post(f"/v1/deliveries/{failed['webhook_id']}/retry", headers=token("had", finess=had))
    assert retried.status_code == 200, retried.text
    again = await settled(client, had, "FAILED", 2)
    assert [a["outcome"] for a in again["attempt_log"]] == ["failed", "failed"]
    assert dns.lookups["rebind.attacker.test"] == 3
    assert internal.received == []


async def test_the_connection_goes_to_the_checked_address_under_the_host_name(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any, dns: ScriptedResolver) -> None:
    department, had = next(_departments), unique_finess()
    receiver = await receivers()
    # Only this resolver knows the name: the system's DNS does not, so a second lookup would fail.
    dns.script("hooks.pinned.test", ["127.0.0.1"])
    with pytest.raises(OSError):
        await system_resolver("hooks.pinned.test", receiver.port)
    secret = (await subscribe(client, f"http://hooks.pinned.test:{receiver.port}/hooks", had))["secret"]
    await publish(producer, offer_proposed(department, had))

    await eventually(lambda: receiver.received, what="the webhook at the pinned address")
    [got] = receiver.received
    assert got.headers["host"] == f"hooks.pinned.test:{receiver.port}"
    assert verify(secret, got.headers, got.body)["type"] == "offer.proposed"
    delivered = await settled(client, had, "DELIVERED", 1)
    assert delivered["attempt_log"][0]["http_status"] == 204
    assert dns.lookups["hooks.pinned.test"] == 2


async def test_a_redirect_is_not_followed_and_what_the_receiver_answers_is_not_stored(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, receivers: Any) -> None:
    department, had = next(_departments), unique_finess()
    # The redirect's target is allowed (127.0.0.1): only not following keeps it untouched.
    target = await receivers()
    redirector = await receivers(answer=lambda _id, _nth: 307, location=f"{target.url}/stolen",
                                 answer_body=b"internal answer: password=hunter2")
    await subscribe(client, redirector.url, had)
    await publish(producer, offer_proposed(department, had))

    failed = await settled(client, had, "FAILED", MAX_ATTEMPTS)
    assert [(a["http_status"], a["error"]) for a in failed["attempt_log"]] == [(307, "HTTP 307")] * MAX_ATTEMPTS
    assert len(redirector.received) == MAX_ATTEMPTS
    assert target.received == []
    assert "hunter2" not in json.dumps(failed)


async def test_a_recipient_holds_a_bounded_number_of_subscriptions(
        client: httpx.AsyncClient, receivers: Any) -> None:
    receiver = await receivers()
    had = unique_finess()
    created = [await subscribe(client, f"{receiver.url}/{n}", had) for n in range(LIMIT)]
    for extra in ({"url": receiver.url}, {"email": "bureau@had.example.org"}):
        response = await client.post("/v1/subscriptions", json=extra, headers=token("had", finess=had))
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "SUBSCRIPTION_LIMIT_REACHED"
    deleted = await client.delete(f"/v1/subscriptions/{created[0]['id']}", headers=token("had", finess=had))
    assert deleted.status_code == 204
    await subscribe(client, receiver.url, had)  # room again

    # Racing requests do not get past the limit together.
    other = unique_finess()
    answers = await asyncio.gather(*(
        client.post("/v1/subscriptions", json={"url": f"{receiver.url}/{n}"}, headers=token("had", finess=other))
        for n in range(2 * LIMIT)))
    assert sorted(r.status_code for r in answers) == [201] * LIMIT + [409] * LIMIT


async def test_secrets_are_sealed_in_postgresql_and_plaintext_is_refused_there(
        app: Any, client: httpx.AsyncClient, receivers: Any) -> None:
    receiver = await receivers()
    had = unique_finess()
    chosen = generate_secret()
    subscription = await subscribe(client, receiver.url, had, secret=chosen)
    assert subscription["secret"] == chosen
    rotated = await client.post(f"/v1/subscriptions/{subscription['id']}/rotate", headers=token("had", finess=had))
    new = rotated.json()["secret"]

    pool: asyncpg.Pool = app.state.pool
    stored = await pool.fetchval("SELECT secrets FROM subscriptions WHERE id = $1", uuid.UUID(subscription["id"]))
    assert len(stored) == 2
    for value, secret in zip(stored, (chosen, new), strict=True):
        assert not value.startswith("whsec_") and secret not in value
        assert SecretBox([NOTIFY_TEST_ENV["NOTIFY_SECRET_KEYS"]]).open(value) == secret
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute("UPDATE subscriptions SET secrets = ARRAY[$2] WHERE id = $1",
                           uuid.UUID(subscription["id"]), chosen)
