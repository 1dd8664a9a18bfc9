"""The HAD's own page on the real broker and database, referral, capacity and notify in-process:
the HAD's coordinating nurse logs in through the suite's provider, her page lists the offer made
to her HAD with what she needs to decide, she accepts (the referral service records her HAD as the
actor: forwarded with her own token), reports admission and discharge, declines another with a
reason, declares capacity; another HAD's page is refused, and a desk's session opens no HAD page
nor an HAD's a desk page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest
from markupsafe import escape

from reflexe_common.geography import Geography
from tests.integration.notify.kit import in_process_platform, log_in, page_browser, register_had
from tests.support.data import referral_body, unique_finess
from tests.support.desk import SseCollector
from tests.support.receiver import WebhookReceiver
from tests.support.services import eventually, serve_in_process, token
from tests.support.territory import own_communes

pytestmark = pytest.mark.integration
ADMIN = token("admin")
DESK_34 = token("desk", department="34")
# Communes only this module uses: each test's HAD is the only one serving its commune.
ACCEPT_COMMUNE, DECLINE_COMMUNE, SCOPE_COMMUNE, STREAM_COMMUNE = own_communes(4)


@pytest.fixture(scope="module")
async def platform(topics) -> AsyncIterator[dict[str, Any]]:
    async with in_process_platform(topics) as running:
        yield running


async def post_referral(referral: httpx.AsyncClient, commune: str, **overrides: Any) -> str:
    hospital = unique_finess()
    response = await referral.post("/v1/referrals", json=referral_body(hospital, commune, **overrides),
                                   headers=token("hospital", finess=hospital))
    assert response.status_code == 201, response.text
    return response.json()["referral_id"]


async def offered_on_page(client: httpx.AsyncClient, finess: str, referral_id: str, timeout: float = 30) -> dict:
    async def probe():
        fragments = (await client.get(f"/had/{finess}/fragments")).json()
        return fragments if referral_id in fragments["offer_ids"] else None

    return await eventually(probe, timeout=timeout, interval=0.2, what=f"offer {referral_id} on the page of {finess}")


async def _delivered(receiver: Any, referral_id: str) -> dict | None:
    return next((d.json for d in receiver.of_type("offer.proposed") if d.json["data"]["referral_id"] == referral_id), None)


async def status_of(referral: httpx.AsyncClient, referral_id: str, desk: dict[str, str] = DESK_34) -> dict:
    return (await referral.get(f"/v1/referrals/{referral_id}", headers=desk)).json()


async def test_the_had_decides_from_its_page_with_its_own_token(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    had = await register_had(capacity, ACCEPT_COMMUNE)
    async with page_browser(platform) as page, AsyncExitStack() as stack:
        assert (await page.get(f"/had/{had}")).headers["location"] == f"/had?next=/had/{had}"
        login = await log_in(page, "had", f"had:finess={had}")
        assert login.status_code == 303 and login.headers["location"] == f"/had/{had}", login.text
        cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("reflexe_had="))
        for attribute in ("HttpOnly", "SameSite=lax", "Secure", "Path=/had"):
            assert attribute.lower() in cookie.lower(), cookie

        # The HAD's system hears of its offers by webhook, with the link to the page to answer from.
        receiver = await stack.enter_async_context(WebhookReceiver())
        subscribed = await page.post("/v1/subscriptions", json={"url": receiver.url, "event_types": ["offer.proposed"]},
                                     headers=token("had", finess=had))
        assert subscribed.status_code == 201, subscribed.text

        referral_id = await post_referral(referral, ACCEPT_COMMUNE, clinical={"karnofsky": 40, "associated_mpp": ["09"]},
                                          desired_admission_at="2031-05-04T08:00:00+00:00",
                                          avis={"eligible": True, "text": "Domicile adapté"})
        # A new matcher first re-reads what its group had not committed: the first offer may take a while.
        fragments = await offered_on_page(page, had, referral_id, timeout=120)
        offer = fragments["offers"]
        commune = escape(f"{Geography.load().commune(ACCEPT_COMMUNE).name} ({ACCEPT_COMMUNE})")  # as the page writes it
        for fact in ("03 — Traitement intraveineux", "09 — ", "40 %", "Pousse-seringue électrique",
                     "Consentement du patient", "Accord du médecin traitant", "favorable — Domicile adapté",
                     commune, "04/05/2031 10:00", "expire dans", "Refuser la demande"):
            assert fact in offer, fact
        whole = await page.get(f"/had/{had}")
        assert whole.status_code == 200 and f"HAD de test {had}" in whole.text and f'id="offer-{referral_id}"' in whole.text
        assert 'aria-live="assertive"' in whole.text and whole.headers["content-security-policy"].startswith("default-src")

        offer_id = (await status_of(referral, referral_id))["current_offer"]["offer_id"]
        told = await eventually(lambda: _delivered(receiver, referral_id), what="the offer's webhook")
        assert told["data"]["page_url"] == f"https://notify/had/{had}"
        incomplete = await page.post(f"/had/{had}/actions/decline", data={"referral_id": referral_id, "offer_id": offer_id})
        assert incomplete.status_code == 422 and incomplete.json()["errors"][0]["field"] == "reason"
        accepted = await page.post(f"/had/{had}/actions/accept", data={"referral_id": referral_id, "offer_id": offer_id},
                                   headers={"Accept": "application/json"})
        assert accepted.status_code == 200 and accepted.json()["ok"], accepted.text
        assert (await status_of(referral, referral_id))["status"] == "ACCEPTED"
        timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK_34)).json()["events"]
        assert [e["actor"] for e in timeline if e["type"] == "OfferAccepted"] == [f"had:{had}"]

        async def patient_listed():
            fragments = (await page.get(f"/had/{had}/fragments")).json()
            return fragments if f'id="patient-{referral_id}"' in fragments["patients"] else None

        fragments = await eventually(patient_listed, what="the accepted patient on the page")
        assert referral_id not in fragments["offer_ids"] and "Déclarer l’admission" in fragments["patients"]
        assert (await page.post(f"/had/{had}/actions/admit", data={"referral_id": referral_id})).status_code == 200
        assert (await status_of(referral, referral_id))["status"] == "ADMITTED"
        assert (await page.post(f"/had/{had}/actions/discharge", data={"referral_id": referral_id})).status_code == 200
        assert (await status_of(referral, referral_id))["status"] == "DISCHARGED"

        async def history_told():
            fragments = (await page.get(f"/had/{had}/fragments")).json()
            return fragments if "Fin de séjour" in fragments["history"] else None

        fragments = await eventually(history_told, what="the discharge in the history")
        for told in ("Offre proposée", "Offre acceptée", "Patient admis"):
            assert told in fragments["history"], told
        assert f'id="patient-{referral_id}"' not in fragments["patients"]


async def test_the_had_declines_with_a_reason_and_declares_capacity(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    had = await register_had(capacity, DECLINE_COMMUNE)
    async with page_browser(platform) as page:
        await log_in(page, "had", f"had:finess={had}")
        referral_id = await post_referral(referral, DECLINE_COMMUNE)
        await offered_on_page(page, had, referral_id, timeout=120)
        offer_id = (await status_of(referral, referral_id))["current_offer"]["offer_id"]
        declined = await page.post(f"/had/{had}/actions/decline", data={
            "referral_id": referral_id, "offer_id": offer_id, "reason": "NO_CAPACITY", "text": "Équipe complète ce soir"})
        assert declined.status_code == 200, declined.text
        timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK_34)).json()["events"]
        refusal = next(e for e in timeline if e["type"] == "OfferDeclined")
        assert refusal["actor"] == f"had:{had}" and refusal["reason"] == "NO_CAPACITY"
        again = await page.post(f"/had/{had}/actions/accept", data={"referral_id": referral_id, "offer_id": offer_id})
        assert again.status_code in (404, 409) and not again.json()["ok"]  # the referral service's answer, told

        async def refusal_told():
            fragments = (await page.get(f"/had/{had}/fragments")).json()
            return fragments if "Offre refusée" in fragments["history"] else None

        fragments = await eventually(refusal_told, what="the refusal in the history")
        assert referral_id not in fragments["offer_ids"] and "plus de place" in fragments["history"]

        declared = await page.post(f"/had/{had}/capacity", data={
            "places_available": "1", "admissions_possible_today": "0", "status": "SATURATED"})
        assert declared.status_code in (200, 201) and declared.json()["ok"], declared.text
        latest = (await capacity.get(f"/v1/hads/{had}/capacity/history",
                                     headers=token("had", finess=had))).json()["declarations"][0]
        assert (latest["places_available"], latest["admissions_possible_today"], latest["status"]) == (1, 0, "SATURATED")
        fragments = (await page.get(f"/had/{had}/fragments")).json()
        assert "Saturée" in fragments["capacity"]
        bad = await page.post(f"/had/{had}/capacity", data={
            "places_available": "beaucoup", "admissions_possible_today": "0", "status": "OPEN"})
        assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["places_available"]
        refused = await page.post(f"/had/{had}/capacity", data={
            "places_available": "1", "admissions_possible_today": "0", "status": "PEUT-ÊTRE"})
        assert refused.status_code == 422 and "body.status" in refused.json()["message"]


async def test_each_had_sees_only_its_own_page_and_desk_sessions_stay_apart(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    had = await register_had(capacity, SCOPE_COMMUNE)
    other = unique_finess("34")
    async with page_browser(platform) as page, page_browser(platform) as desk:
        await log_in(page, "had", f"had:finess={had}")
        refused = await page.get(f"/had/{other}")
        assert refused.status_code == 403 and f"ne peut pas voir la page de l’HAD {other}" in refused.text
        for path in ("fragments", "stream"):
            assert (await page.get(f"/had/{other}/{path}")).status_code == 403
        assert (await page.post(f"/had/{other}/capacity", data={
            "places_available": "1", "admissions_possible_today": "1", "status": "OPEN"})).status_code == 403
        assert (await page.post(f"/had/{other}/actions/accept", data={"referral_id": "x", "offer_id": "y"})).status_code == 403
        # The other HAD's offer is not on this HAD's page.
        assert (await page.get(f"/had/{had}/fragments")).json()["offer_ids"] == []

        # A cross-site post is refused before anything is forwarded.
        assert (await page.post(f"/had/{had}/capacity", headers={"Origin": "https://elsewhere.test"}, data={
            "places_available": "1", "admissions_possible_today": "1", "status": "OPEN"})).status_code == 403

        # A desk logging in on the HAD pages is turned away; its own session opens no HAD page.
        turned_away = await log_in(desk, "had", "desk:department=34")
        assert turned_away.status_code == 403 and "pas celui d’une HAD" in turned_away.text
        assert (await log_in(desk, "desk", "desk:department=34")).status_code == 303
        desk_session = desk.cookies["reflexe_desk"]
        had_session = page.cookies["reflexe_had"]
        async with page_browser(platform) as forged:
            forged.cookies.set("reflexe_had", desk_session)
            assert (await forged.get(f"/had/{had}")).status_code == 303  # to the HAD login: no HAD session
            assert (await forged.get(f"/had/{had}/fragments")).status_code == 401
        async with page_browser(platform) as forged:
            forged.cookies.set("reflexe_desk", had_session)
            assert (await forged.get("/desk/34")).status_code == 303
            assert (await forged.get("/desk/34/fragments")).status_code == 401

        # Logging out ends the HAD's session.
        out = await page.post("/had/logout")
        assert out.status_code == 303
        assert (await page.get(f"/had/{had}/fragments")).status_code == 401



async def test_each_had_hears_live_of_its_own_referrals_only(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    had = await register_had(capacity, STREAM_COMMUNE)
    async with (page_browser(platform) as page, serve_in_process(platform["notify"], lifespan=False) as url,
                httpx.AsyncClient() as http):
        await log_in(page, "had", f"had:finess={had}")
        cookie = {"Cookie": f"reflexe_had={page.cookies['reflexe_had']}"}
        stream = SseCollector(http, f"{url}/had/{had}/stream", cookie)
        await asyncio.wait_for(stream.opened.wait(), 10)
        assert stream.status == 200

        hospital = unique_finess()
        posted = await referral.post("/v1/referrals", json=referral_body(hospital, STREAM_COMMUNE),
                                     headers=token("hospital", finess=hospital))
        referral_id = posted.json()["referral_id"]
        await eventually(lambda: any(e.json["type"] == "offer.proposed" for e in stream.events), timeout=120,
                         what="the offer on the HAD's stream")
        offered = next(e for e in stream.events if e.json["type"] == "offer.proposed").json
        assert offered["data"]["referral_id"] == referral_id and offered["data"]["had_finess"] == had
        assert offered["data"]["explanation"].startswith("Proposé à") and "ensuite" not in offered["data"]["explanation"]

        # The hospital cancels: the HAD it was offered to is told, live.
        cancelled = await referral.post(f"/v1/referrals/{referral_id}/cancel", json={"reason": "PATIENT_REFUSED"},
                                        headers=token("hospital", finess=hospital))
        assert cancelled.status_code == 200, cancelled.text
        await eventually(lambda: any(e.json["type"] == "referral.cancelled" for e in stream.events),
                         what="the cancellation on the HAD's stream")
        first_id = stream.events[0].id
        await stream.stop()
        assert (await page.get(f"/had/{had}/fragments")).json()["offer_ids"] == []

        # Resumed with Last-Event-ID: what came after, once.
        resumed = SseCollector(http, f"{url}/had/{had}/stream", {**cookie, "Last-Event-ID": first_id})
        await eventually(lambda: len(resumed.events) >= len(stream.events) - 1, what="the resumed stream")
        await resumed.stop()
        ids = [int(e.id) for e in resumed.events]
        # Later entries may follow (its places freed by the cancellation): in order, without a gap or a repeat.
        assert ids[:len(stream.events) - 1] == [int(e.id) for e in stream.events[1:]]
        assert ids == list(range(int(first_id) + 1, int(first_id) + 1 + len(ids)))

        # No other HAD's stream names this referral (its entries are written with this HAD's).
        pool = platform["notify"].state.pool
        others = await pool.fetchval("SELECT count(*) FROM desk_events WHERE department LIKE 'had:%' "
                                     "AND department <> $1 AND payload LIKE $2", f"had:{had}", f"%{referral_id}%")
        assert others == 0
        assert (await http.get(f"{url}/had/{unique_finess('34')}/stream", headers=cookie)).status_code == 403
