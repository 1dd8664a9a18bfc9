"""The desk page in a real browser (Debian's Chromium, driven by Playwright), the four services
as separate processes on real Kafka and PostgreSQL, trusting the real Keycloak: the desk nurse
logs in on Keycloak's page with her user name and password, a referral posted through the API
appears on her page within 2 s without a reload, moves when the HAD accepts, she opens the whole
request and its timeline from the queue and comes back, and she closes it from the page, keyboard
only; logging out ends her session at Keycloak too. Every API call of the test carries a token
from the same Keycloak. Screenshots are kept in test-artifacts/."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.browser import ARTIFACTS, browser_platform, log_in
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.keycloak import Keycloak
from tests.support.territory import own_commune, own_department

# The session's Keycloak may start inside this test's setup (the first to ask for it in a run, or
# alone): minutes on two busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
# A department of this test's own (its desk's page shows one page of open referrals: this test's
# only), another whose page the desk may not open, and a commune only this test's HAD serves.
DEPARTMENT, OTHER_DEPARTMENT = own_department(), own_department()
COMMUNE = own_commune(DEPARTMENT)


async def test_a_desk_follows_and_steers_referrals_live_in_a_browser(topics, keycloak: Keycloak, tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browser_platform(topics, keycloak, tmp_path) as platform:
        services, browser, token = platform.services, platform.browser, platform.token
        capacity, referral = platform.capacity, platform.referral
        desk, desk_password = await platform.own_user("desk", department=DEPARTMENT)
        desk_token = await token("desk", department=DEPARTMENT)
        had = unique_finess(DEPARTMENT)
        had_token = await token("had", finess=had)
        assert (await capacity.put(f"/v1/hads/{had}", json=had_body("HAD Avène", [COMMUNE], department=DEPARTMENT),
                                   headers=await token("admin"))).status_code == 200
        assert (await capacity.post(f"/v1/hads/{had}/capacity", headers=had_token, json={
            "places_available": 2, "admissions_possible_today": 2, "status": "OPEN"})).status_code == 201

        page = await (await browser.new_context(locale="fr-FR", viewport={"width": 1366, "height": 900})).new_page()
        notify = services["notify"].url
        await page.goto(f"{notify}/desk/{DEPARTMENT}")
        assert page.url.startswith(f"{notify}/desk?next=")  # not logged in: the login page
        await log_in(page, keycloak, desk, desk_password)
        await page.wait_for_url(f"{notify}/desk/{DEPARTMENT}")
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["reflexe_desk"]["httpOnly"] and cookies["reflexe_desk"]["sameSite"] == "Lax"
        assert cookies["reflexe_desk"]["value"].count(".") < 2, "the browser holds a session id, never a token"
        await expect(page.locator("#live-text")).to_have_text("En direct", timeout=10_000)
        await expect(page.locator(f'#board tr[data-finess="{had}"]')).to_contain_text("HAD Avène")

        # A desk may not open another department's page.
        other = await page.request.get(f"{notify}/desk/{OTHER_DEPARTMENT}")
        assert other.status == 403

        hospital = unique_finess(DEPARTMENT)
        posted = await referral.post("/v1/referrals", json=referral_body(hospital, COMMUNE),
                                     headers=await token("hospital", finess=hospital))
        assert posted.status_code == 201
        answered = time.monotonic()
        referral_id = posted.json()["referral_id"]
        row = page.locator(f"#ref-{referral_id}")
        await expect(row).to_be_visible(timeout=2_000)  # live, no reload
        appeared = time.monotonic() - answered
        assert appeared <= 2.0, f"appeared after {appeared:.2f} s"

        # The matcher offers it to the HAD: the page shows the offer, its explanation and hold clock.
        await expect(row).to_contain_text("Proposée", timeout=10_000)
        await expect(row).to_contain_text("HAD Avène")
        await expect(row.locator("[data-until]")).to_contain_text("expire dans")
        offer = (await referral.get(f"/v1/referrals/{referral_id}", headers=desk_token)).json()
        assert row.locator(".explanation") and offer["current_offer"]["explanation"]
        await expect(row.locator(".explanation")).to_have_text(offer["current_offer"]["explanation"])

        accepted = await referral.post(
            f"/v1/referrals/{referral_id}/offers/{offer['current_offer']['offer_id']}/accept", headers=had_token)
        assert accepted.status_code == 200
        await expect(row).to_contain_text("Acceptée", timeout=5_000)  # it moves, live

        # The whole request, from the queue, with the keyboard: every field, the timeline with who did what.
        await row.get_by_role("link", name=f"Voir toute la demande {referral_id[:8]}").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{notify}/desk/{DEPARTMENT}/referrals/{referral_id}")
        await expect(page.locator("#patient-facts")).to_contain_text(posted.json()["patient"]["pseudonym"])
        await expect(page.locator("#clinical-facts")).to_contain_text("Indice de Karnofsky")
        await expect(page.locator("#state-facts")).to_contain_text("Acceptée par")
        timeline = page.locator("#timeline li")
        await expect(timeline).to_have_count(3)
        await expect(timeline.nth(0)).to_contain_text(f"Par : Établissement de santé (FINESS {hospital})")
        await expect(timeline.nth(2)).to_contain_text(f"Par : HAD Avène (HAD, FINESS {had})")
        await page.screenshot(path=str(ARTIFACTS / "desk-referral-page.png"), full_page=True)
        await page.locator("#back").focus()
        await page.keyboard.press("Enter")
        await page.wait_for_url(f"{notify}/desk/{DEPARTMENT}#ref-{referral_id}")
        await expect(page.locator("#live-text")).to_have_text("En direct", timeout=10_000)

        # The desk closes it from the page, with the keyboard only.
        await row.get_by_role("button", name="Sélectionner").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#referral-select")).to_be_focused()
        await expect(page.locator("#referral-select")).to_have_value(referral_id)
        await page.locator("#close-reason").focus()
        await page.locator("#close-reason").select_option("PATIENT_REFUSED")
        await page.keyboard.press("Tab")
        await page.keyboard.type("Le patient préfère rester à l'hôpital.")
        await page.keyboard.press("Tab")
        await expect(page.get_by_role("button", name="Clôturer")).to_be_focused()
        await page.screenshot(path=str(ARTIFACTS / "desk-page-before-close.png"), full_page=True)
        await page.keyboard.press("Enter")
        await expect(page.locator("#action-result")).to_have_text("Demande clôturée.", timeout=5_000)
        await expect(row).to_have_count(0, timeout=5_000)  # no longer open
        closed = (await referral.get(f"/v1/referrals/{referral_id}", headers=desk_token)).json()
        assert closed["status"] == "CANCELLED"
        await expect(page.locator("#alerts")).to_be_attached()

        # The stream drops (the notify process crashes): the banner says so. A referral posted
        # meanwhile shows once the page has reconnected by itself, still without a reload.
        services["notify"].kill()
        await expect(page.locator("#stream-banner")).to_be_visible(timeout=10_000)
        await expect(page.locator("#live-text")).to_have_text("Hors ligne — reconnexion…")
        missed = await referral.post("/v1/referrals", json=referral_body(hospital, COMMUNE),
                                     headers=await token("hospital", finess=hospital))
        assert missed.status_code == 201
        services["notify"].start()
        await services["notify"].wait_ready()
        await expect(page.locator("#stream-banner")).to_be_hidden(timeout=15_000)
        await expect(page.locator(f"#ref-{missed.json()['referral_id']}")).to_be_visible(timeout=10_000)

        await page.screenshot(path=str(ARTIFACTS / "desk-page.png"), full_page=True)

        # Logging out ends the session here and at Keycloak: the next login asks for the password again.
        await page.get_by_role("button", name="Se déconnecter").click()
        await page.wait_for_url(f"{notify}/desk")
        assert (await page.request.get(f"{notify}/desk/{DEPARTMENT}", max_redirects=0)).status == 303
        await page.get_by_role("link", name="Se connecter").click()
        await expect(page.locator("#username")).to_be_visible(timeout=15_000)
