"""The HAD's own page in a real browser (Debian's Chromium, driven by Playwright), the four services
as separate processes on real Kafka and PostgreSQL, trusting the real Keycloak: the coordinating
nurse of the test's own HAD logs in on Keycloak's page with her user name and password, an offer to her
HAD appears live (announced to screen readers), she accepts it from the keyboard, and declares her
capacity. Every API call of the test carries a token from the same Keycloak. Screenshots are kept
in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest

from reflexe_common.geography import Geography
from tests.support.browser import ARTIFACTS, browser_platform, log_in
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.keycloak import Keycloak
from tests.support.territory import own_commune, own_department

# The session's Keycloak may start inside this test's setup (the first to ask for it in a run, or
# alone): minutes on two busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
DEPARTMENT = own_department()  # this test's own: its HAD, its commune, its desk
COMMUNE = own_commune(DEPARTMENT)  # only this test's HAD serves it
HAD, OTHER_HAD = unique_finess(DEPARTMENT), unique_finess(DEPARTMENT)


async def test_an_had_decides_an_offer_live_from_its_page_with_the_keyboard(topics, keycloak: Keycloak,
                                                                            tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browser_platform(topics, keycloak, tmp_path) as platform:
        services, browser, token = platform.services, platform.browser, platform.token
        capacity, referral = platform.capacity, platform.referral
        registered = await capacity.put(f"/v1/hads/{HAD}", json=had_body("HAD Garrigues", [COMMUNE], department=DEPARTMENT),
                                        headers=await token("admin"))
        assert registered.status_code == 200, registered.text
        assert (await capacity.post(f"/v1/hads/{HAD}/capacity", headers=await token("had", finess=HAD), json={
            "places_available": 2, "admissions_possible_today": 2, "status": "OPEN"})).status_code == 201

        nurse, nurse_password = await platform.own_user("had", f"had{HAD}", finess=HAD)
        page = await (await browser.new_context(locale="fr-FR", viewport={"width": 1366, "height": 1000})).new_page()
        notify = services["notify"].url
        await page.goto(f"{notify}/had/{HAD}")
        assert page.url.startswith(f"{notify}/had?next=")
        await log_in(page, keycloak, nurse, nurse_password)
        await page.wait_for_url(f"{notify}/had/{HAD}")
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert cookies["reflexe_had"]["httpOnly"] and cookies["reflexe_had"]["path"] == "/had"
        assert "reflexe_desk" not in cookies
        await expect(page.locator("#live-text")).to_have_text("En direct", timeout=10_000)
        await expect(page.locator("#offers")).to_contain_text("Aucune offre")
        await expect(page.get_by_role("heading", level=1)).to_contain_text("HAD Garrigues")
        # Another HAD's page is not hers.
        assert (await page.request.get(f"{notify}/had/{OTHER_HAD}")).status == 403

        hospital = unique_finess(DEPARTMENT)
        posted = await referral.post("/v1/referrals", json=referral_body(hospital, COMMUNE, clinical={"karnofsky": 60}),
                                     headers=await token("hospital", finess=hospital))
        assert posted.status_code == 201, posted.text
        referral_id = posted.json()["referral_id"]
        offer = page.locator(f"#offer-{referral_id}")
        await expect(offer).to_be_visible(timeout=30_000)  # live, no reload
        await expect(page.locator("#offer-announce")).to_have_text(f"Nouvelle offre reçue : demande {referral_id[:8]}.")
        await expect(offer).to_contain_text("60 %")
        await expect(offer).to_contain_text(f"{Geography.load().commune(COMMUNE).name} ({COMMUNE})")
        await expect(offer.locator("[data-until]")).to_contain_text("expire dans")
        await page.screenshot(path=str(ARTIFACTS / "had-page-offer.png"), full_page=True)

        # Keyboard only: from the skip link to the offer's heading, then Tab to "Accepter".
        await page.keyboard.press("Tab")
        await expect(page.locator("a.skip")).to_be_focused()
        await page.keyboard.press("Enter")
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.classList.contains('accept')"):
                break
        accept = offer.get_by_role("button", name=f"Accepter la demande {referral_id[:8]}")
        await expect(accept).to_be_focused()
        outline = await accept.evaluate("el => getComputedStyle(el).outlineStyle")
        assert outline != "none", "the focus is visible"
        await page.keyboard.press("Enter")
        await expect(page.locator("#action-result")).to_have_text("Offre acceptée : le patient est attendu.",
                                                                  timeout=5_000)
        await expect(offer).to_have_count(0, timeout=5_000)
        await expect(page.locator(f"#patient-{referral_id}")).to_contain_text("Acceptée", timeout=5_000)
        await expect(page.locator("#history")).to_contain_text("Offre acceptée", timeout=5_000)
        accepted = (await referral.get(f"/v1/referrals/{referral_id}", headers=await token("desk", department=DEPARTMENT))).json()
        assert accepted["status"] == "ACCEPTED"

        # Her declaration, from the page.
        await page.locator("#places").fill("1")
        await page.locator("#admissions").fill("0")
        await page.locator("#capacity-status").select_option("SATURATED")
        await page.locator("#capacity-form button[type=submit]").focus()
        await page.keyboard.press("Enter")
        await expect(page.locator("#capacity-result")).to_have_text("Capacité déclarée.", timeout=5_000)
        await expect(page.locator("#capacity")).to_contain_text("Saturée", timeout=5_000)
        await page.screenshot(path=str(ARTIFACTS / "had-page.png"), full_page=True)
