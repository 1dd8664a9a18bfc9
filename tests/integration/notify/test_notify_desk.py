"""The desks' side of notify on real Kafka and PostgreSQL: the live stream resumes with
Last-Event-ID without missing or repeating an event, e-mails go over real SMTP (aiosmtpd) with
the webhooks' retries and log, and the desk page's session is scoped to the desk's department."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from reflexe.v1 import capacity_pb2, referral_pb2

from reflexe_common.envelope import ts
from reflexe_common.finess import with_key
from reflexe_notify.adapters import store
from reflexe_notify.domain.desk import DeskEvent
from reflexe_notify.entrypoints.app import build_app
from tests.integration.notify.kit import AT, header, notify_settings, publish, referral_requested
from tests.support.data import pseudonym
from tests.support.desk import SmtpSink, SseCollector
from tests.support.infra import Infra
from tests.support.services import eventually, token
from tests.support.territory import own_department

pytestmark = pytest.mark.integration
# Departments only this module writes into: each desk's stream and mail carry its test's referrals only.
STREAM_DEPARTMENT, MAIL_DEPARTMENT, RETRY_DEPARTMENT, ORDER_DEPARTMENT = (own_department() for _ in range(4))


@pytest.fixture(scope="module")
def smtp() -> SmtpSink:
    sink = SmtpSink().start()  # accepts everything; a test may make it refuse for a while
    yield sink
    sink.stop()


@pytest.fixture(scope="module")
async def app(infra: Infra, producer: AIOKafkaProducer, smtp: SmtpSink) -> AsyncIterator[Any]:
    settings = notify_settings(
        infra, NOTIFY_SMTP_HOST="127.0.0.1", NOTIFY_SMTP_PORT=smtp.port, NOTIFY_SMTP_FROM="Réflexe <ne-pas-repondre@reflexe.test>",
        NOTIFY_PUBLIC_URL="https://reflexe.test",
    )
    application = build_app(settings)
    async with application.router.lifespan_context(application):
        await application.state.pool.execute("UPDATE subscriptions SET active = false")
        await eventually(application.state.desk_hub.listening.is_set, what="the desk stream listener")
        yield application


def capacity_changed(department: str, live: int) -> capacity_pb2.LivePlacesChanged:
    return capacity_pb2.LivePlacesChanged(had_finess=with_key(f"{department}0000001"[:8]), department=department,
                                          occurred_at=ts(AT), live_places=live, declared_places=live, status="OPEN",
                                          authorised_places=50)


async def test_the_stream_resumes_with_last_event_id_without_a_gap_or_a_repeat(
        url: str, producer: AIOKafkaProducer) -> None:
    desk = token("desk", department=STREAM_DEPARTMENT)
    stream_url = f"{url}/v1/desks/{STREAM_DEPARTMENT}/stream"
    async with httpx.AsyncClient() as http:
        first = SseCollector(http, stream_url, desk)
        await asyncio.wait_for(first.opened.wait(), 10)
        assert first.status == 200
        for live in range(10):
            await publish(producer, capacity_changed(STREAM_DEPARTMENT, live))
        await eventually(lambda: len(first.events) >= 10, what="ten live events")
        await first.stop()  # the connection drops…
        resume_from = first.events[4].id  # …and the client had only processed five
        for live in range(10, 25):  # events keep coming while it is away
            await publish(producer, capacity_changed(STREAM_DEPARTMENT, live))
        second = SseCollector(http, stream_url, {**desk, "Last-Event-ID": resume_from})
        for live in range(25, 30):
            await publish(producer, capacity_changed(STREAM_DEPARTMENT, live))
        await eventually(lambda: len(second.events) >= 25, what="the missed and the new events")
        await asyncio.sleep(0.3)
        await second.stop()
    lives = [e.json["data"]["live_places"] for e in second.events]
    assert lives == list(range(5, 30)), "replayed then live, in order, each once"
    ids = [int(e.id) for e in second.events]
    assert ids == list(range(int(resume_from) + 1, int(resume_from) + 26))
    assert all(e.event == "desk" and e.json["type"] == "capacity.changed" for e in second.events)


async def test_numbers_commit_in_order_even_when_writers_race(app: Any) -> None:
    """Many transactions of one department at once: a reader polling "after n" never skips one."""
    pool: asyncpg.Pool = app.state.pool
    start = await store.desk_head(pool, ORDER_DEPARTMENT)
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        last = start
        while not (done.is_set() and last - start >= 200):
            for seq, _ in await store.desk_events_after(pool, ORDER_DEPARTMENT, last):
                seen.append(seq)
                last = seq
            await asyncio.sleep(0)

    async def writer(i: int) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await store.append_desk_event(conn, DeskEvent(ORDER_DEPARTMENT, f"race-{uuid.uuid4()}", "capacity.changed",
                                                          AT, {"i": i}))
            await asyncio.sleep(0.001 * (i % 5))  # hold the transaction open a little, differently

    reading = asyncio.create_task(reader())
    for batch in range(20):
        await asyncio.gather(*(writer(batch * 10 + k) for k in range(10)))
    done.set()
    await asyncio.wait_for(reading, 20)
    assert seen == list(range(start + 1, start + 201))


async def test_the_stream_and_alerts_are_authenticated_and_scoped(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"/v1/desks/{STREAM_DEPARTMENT}/stream")).status_code == 401
    forbidden = await client.get(f"/v1/desks/{STREAM_DEPARTMENT}/stream", headers=token("desk", department="34"))
    assert forbidden.status_code == 403
    assert (await client.get(f"/v1/desks/{STREAM_DEPARTMENT}/alerts",
                             headers=token("had", finess="340011295"))).status_code == 403
    assert (await client.get("/desk/34/stream")).status_code == 401
    assert (await client.get("/desk/34/fragments")).status_code == 401


async def _log_in(browser: httpx.AsyncClient, login_hint: str, next_path: str = "") -> httpx.Response:
    """A browser's whole login: our login route, the provider (which logs in `login_hint`), our callback."""
    start = await browser.get("/desk/login", params={"login_hint": login_hint, **({"next": next_path} if next_path else {})})
    assert start.status_code == 303, start.text
    authorize = urlsplit(start.headers["location"])
    query = dict(parse_qsl(authorize.query))
    assert query["code_challenge_method"] == "S256" and query["client_id"] == "reflexe-web" and query["nonce"]
    async with httpx.AsyncClient() as provider:
        back = await provider.get(start.headers["location"])
    assert back.status_code == 302
    returned = urlsplit(back.headers["location"])
    assert returned.path == "/desk/callback"
    return await browser.get(f"{returned.path}?{returned.query}")


async def test_a_desk_logs_in_at_the_provider_and_keeps_only_an_opaque_session_id(
        app: Any, client: httpx.AsyncClient) -> None:
    page = await client.get("/desk/34")
    assert page.status_code == 303 and page.headers["location"].startswith("/desk?next=")
    assert (await client.get("/desk/callback", params={"state": "forged", "code": "x"})).status_code == 400

    async with httpx.AsyncClient(transport=client._transport, base_url="https://notify") as browser:
        login = await _log_in(browser, "desk:department=34", next_path="/desk/34")
        assert login.status_code == 303 and login.headers["location"] == "/desk/34", login.text
        cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("reflexe_desk="))
        for attribute in ("HttpOnly", "SameSite=lax", "Secure", "Path=/desk", "Max-Age="):
            assert attribute.lower() in cookie.lower(), cookie
        session_id = browser.cookies["reflexe_desk"]
        stored = await app.state.pool.fetchrow("SELECT * FROM page_sessions WHERE subject <> '' ORDER BY created_at DESC LIMIT 1")
        assert stored["access_token"].count(".") == 2 and session_id not in (stored["access_token"], stored["refresh_token"])
        assert stored["id_hash"] == hashlib.sha256(session_id.encode()).digest(), "the table keeps the id's hash only"

        own = await browser.get("/desk/34")  # the other services are not running here: said so, not crashed
        assert own.status_code == 200 and "Bureau de coordination HAD — Hérault (34)" in own.text
        assert "service momentanément indisponible" in own.text
        assert own.headers["content-security-policy"].startswith("default-src 'self'")
        assert own.headers["strict-transport-security"].startswith("max-age=")
        other = await browser.get("/desk/31")
        assert other.status_code == 403 and "ne peut pas voir le département 31" in other.text
        assert (await browser.get("/desk/31/fragments")).status_code == 403
        assert (await browser.get("/desk/31/stream")).status_code == 403
        static = await browser.get("/desk/static/page.js")
        assert static.status_code == 200 and "EventSource" in static.text
        assert static.headers["content-type"].startswith("text/javascript")
        assert static.headers["x-content-type-options"] == "nosniff" and static.headers["cache-control"] == "no-cache"
        assert "ReflexePage" in (await browser.get("/desk/static/desk.js")).text
        assert (await browser.get("/desk/static/../settings.py")).status_code == 404

        # An access token about to expire is refreshed at the provider, server-side.
        await app.state.pool.execute("UPDATE page_sessions SET access_expires_at = now() WHERE id_hash = $1", stored["id_hash"])
        assert (await browser.get("/desk/34")).status_code == 200
        renewed = await app.state.pool.fetchrow("SELECT access_token, access_expires_at FROM page_sessions WHERE id_hash = $1",
                                                stored["id_hash"])
        assert renewed["access_token"] != stored["access_token"]

        cross = await browser.post("/desk/logout", headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
        logout = await browser.post("/desk/logout", headers={"Origin": "https://notify"})
        assert logout.status_code == 303
        provider_logout = urlsplit(logout.headers["location"])
        assert provider_logout.path.endswith("/protocol/openid-connect/logout")
        assert dict(parse_qsl(provider_logout.query))["id_token_hint"].count(".") == 2
        assert await app.state.pool.fetchval("SELECT count(*) FROM page_sessions WHERE id_hash = $1", stored["id_hash"]) == 0
        browser.cookies.set("reflexe_desk", session_id, domain="notify")  # a copy of the old cookie is worthless
        assert (await browser.get("/desk/34")).status_code == 303


async def test_only_desk_accounts_open_the_desk_page_and_a_callback_works_once(client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(transport=client._transport, base_url="https://notify") as browser:
        had = await _log_in(browser, "had:finess=340011295")
        assert had.status_code == 403 and "pas celui d’un bureau" in had.text
        assert "reflexe_desk" not in browser.cookies
    async with httpx.AsyncClient(transport=client._transport, base_url="https://notify") as browser:
        start = await browser.get("/desk/login", params={"login_hint": "desk:department=34"})
        async with httpx.AsyncClient() as provider:
            back = urlsplit((await provider.get(start.headers["location"])).headers["location"])
        assert (await browser.get(f"{back.path}?{back.query}")).status_code == 303
        replayed = await browser.get(f"{back.path}?{back.query}")
        assert replayed.status_code == 400, "a callback's state is good for one login only"


async def test_an_escalation_is_emailed_in_french_and_logged(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, smtp: SmtpSink) -> None:
    desk = token("desk", department=MAIL_DEPARTMENT)
    subscribed = await client.post("/v1/subscriptions", headers=desk, json={
        "email": "bureau972@mssante.test", "event_types": ["referral.escalated", "admission.overdue"]})
    assert subscribed.status_code == 201, subscribed.text
    view = subscribed.json()
    assert view["channel"] == "email" and view["email"] == "bureau972@mssante.test" and "secret" not in view
    both = await client.post("/v1/subscriptions", headers=desk, json={"email": "a@b.test", "url": "http://x.test/h"})
    assert both.status_code == 422

    referral_id = str(uuid.uuid4())
    await publish(producer, referral_requested(MAIL_DEPARTMENT, "972000012", referral_id))
    await publish(producer, referral_pb2.ReferralEscalated(header=header(referral_id, MAIL_DEPARTMENT),
                                                           why="aucune HAD ne couvre la commune"))

    def mailed():
        return [m for m in smtp.messages if referral_id[:8] in m.get_body(("plain",)).get_content()]

    [message] = await eventually(mailed, what="the escalation e-mail")
    assert message["Subject"] == f"[Réflexe] Aucune HAD trouvée — département {MAIL_DEPARTMENT}"
    assert message["To"] == "bureau972@mssante.test" and "ne-pas-repondre@reflexe.test" in message["From"]
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    assert "aucune HAD ne couvre la commune" in text and f"https://reflexe.test/desk/{MAIL_DEPARTMENT}" in text
    assert pseudonym("pseudo-0001") not in message.as_string() and "1942" not in message.as_string()
    assert '<html lang="fr">' in message.get_body(("html",)).get_content()

    async def logged():
        rows = (await client.get("/v1/deliveries", headers=desk)).json()
        return [r for r in rows if r["status"] == "DELIVERED" and r["event_type"] == "referral.escalated"]

    [row] = await eventually(logged, what="the delivery log")
    assert row["attempt_log"][0]["outcome"] == "delivered" and row["attempt_log"][0]["http_status"] is None

    alerts = (await client.get(f"/v1/desks/{MAIL_DEPARTMENT}/alerts", headers=desk)).json()["alerts"]
    assert alerts[0]["type"] == "referral.escalated" and alerts[0]["data"]["referral_id"] == referral_id


async def test_a_refused_email_is_retried_with_the_same_message_id(
        client: httpx.AsyncClient, producer: AIOKafkaProducer, smtp: SmtpSink) -> None:
    desk = token("desk", department=RETRY_DEPARTMENT)
    smtp.answer = lambda _id, nth: "451 4.3.0 Réessayez plus tard" if nth <= 2 else None
    try:
        assert (await client.post("/v1/subscriptions", headers=desk, json={
            "email": "bureau973@mssante.test", "event_types": ["admission.overdue"]})).status_code == 201
        referral_id = str(uuid.uuid4())
        await publish(producer, referral_pb2.AdmissionOverdue(header=header(referral_id, RETRY_DEPARTMENT)))

        def delivered():
            return [m for m in smtp.messages if m["To"] == "bureau973@mssante.test"]

        [message] = await eventually(delivered, what="the e-mail after two refusals")
        assert smtp.attempts[message["Message-ID"]] == 3
        assert message["Subject"].startswith("[Réflexe] Admission en retard")

        async def logged():
            rows = (await client.get("/v1/deliveries", headers=desk)).json()
            return [r for r in rows if r["status"] == "DELIVERED"]

        [row] = await eventually(logged, what="the delivery log")
        assert [a["outcome"] for a in row["attempt_log"]] == ["retry", "retry", "delivered"]
        assert "451" in row["attempt_log"][0]["error"]
    finally:
        smtp.answer = lambda _id, nth: None
