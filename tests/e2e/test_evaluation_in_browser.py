"""The evaluation before admission in a real browser (Debian's Chromium, driven by Playwright), the
four services as separate processes on real Kafka and PostgreSQL, trusting the real Keycloak:
an HAD's coordinating nurse accepts an offer pending evaluation, her HAD's liaison nurse logs in
at the HAD's login page, is sent to her own page and gives the avis, the coordinating nurse
confirms the admission; on a second referral she withdraws her acceptance with a reason and the
next HAD is offered it. The users are this test's own, created in Keycloak. Screenshots are kept
in test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.browser import ARTIFACTS, browser_platform, log_in
from tests.support.data import had_body, referral_body, unique_finess
from tests.support.keycloak import Keycloak
from tests.support.services import eventually
from tests.support.territory import own_commune, own_department

# Four services, Kafka, PostgreSQL and Keycloak started for one test: minutes on two busy cores.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
DEPARTMENT = own_department()  # this test's own: its HADs, its commune, its liaison nurse's list
COMMUNE = own_commune(DEPARTMENT)  # only this test's two HADs serve it


async def test_an_had_accepts_pending_evaluation_its_liaison_gives_the_avis_then_it_confirms_or_withdraws(
        topics, keycloak: Keycloak, tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with browser_platform(topics, keycloak, tmp_path) as platform:
        services, browser, token = platform.services, platform.browser, platform.token
        capacity, referral = platform.capacity, platform.referral
        # Two HADs of the commune: the first with more free places, offered first.
        first, second = unique_finess(DEPARTMENT), unique_finess(DEPARTMENT)
        for finess, name, places in ((first, "HAD Thau", 3), (second, "HAD Pézenas", 1)):
            assert (await capacity.put(f"/v1/hads/{finess}", json=had_body(name, [COMMUNE], department=DEPARTMENT),
                                       headers=await token("admin"))).status_code == 200
            assert (await capacity.post(f"/v1/hads/{finess}/capacity", headers=await token("had", finess=finess),
                                        json={"places_available": places, "admissions_possible_today": places,
                                              "status": "OPEN"})).status_code == 201
        nurse, nurse_password = await platform.own_user("had", f"had{first}", finess=first)
        liaison, liaison_password = await platform.own_user("liaison", f"liaison{first}", finess=first,
                                                            department=DEPARTMENT)

        notify = services["notify"].url
        page = await (await browser.new_context(locale="fr-FR", viewport={"width": 1366, "height": 1000})).new_page()
        await page.goto(f"{notify}/had/{first}")
        await log_in(page, keycloak, nurse, nurse_password)
        await page.wait_for_url(f"{notify}/had/{first}")
        await expect(page.locator("#live-text")).to_have_text("En direct", timeout=10_000)

        async def post() -> str:
            hospital = unique_finess(DEPARTMENT)
            posted = await referral.post("/v1/referrals", json=referral_body(hospital, COMMUNE),
                                         headers=await token("hospital", finess=hospital))
            assert posted.status_code == 201, posted.text
            return posted.json()["referral_id"]

        async def state(referral_id: str) -> dict:
            return (await referral.get(f"/v1/referrals/{referral_id}", headers=await token("admin"))).json()

        # 1. Accepted pending evaluation: held, the admission target running.
        referral_id = await post()
        offer = page.locator(f"#offer-{referral_id}")
        await expect(offer).to_be_visible(timeout=60_000)
        await offer.get_by_role("button", name=f"Accepter sous réserve d’évaluation la demande {referral_id[:8]}").click()
        await expect(page.locator("#action-result")).to_have_text(
            "Offre acceptée sous réserve d’évaluation : la place reste réservée.", timeout=5_000)
        pending = page.locator(f"#patient-{referral_id}")
        await expect(pending).to_contain_text("Évaluation en cours", timeout=5_000)
        await expect(pending).to_contain_text("Objectif d’admission")
        await expect(pending.locator("[data-due]")).to_contain_text("dans ")
        assert (await state(referral_id))["evaluation_pending"] is True
        await page.screenshot(path=str(ARTIFACTS / "had-page-evaluation.png"), full_page=True)

        # 2. The liaison nurse goes to the HAD's login page: she is sent to her own page.
        visit = await (await browser.new_context(locale="fr-FR", viewport={"width": 1366, "height": 1000})).new_page()
        await visit.goto(f"{notify}/had")
        await log_in(visit, keycloak, liaison, liaison_password)
        await visit.wait_for_url(f"{notify}/liaison/{first}")
        card = visit.locator(f"#avis-{referral_id}")
        await expect(card).to_contain_text("Évaluation en cours (votre HAD)")
        await expect(card).to_contain_text("non donné")
        await card.get_by_label("Favorable", exact=True).check()
        await card.get_by_label("Précision (facultatif, sans donnée identifiante)").fill("Domicile adapté, aidant présent")
        await card.get_by_role("button", name=f"Enregistrer l’avis — demande {referral_id[:8]}").click()
        await expect(visit.locator("#action-result")).to_have_text("Avis HAD enregistré.", timeout=5_000)
        await expect(visit.locator(f"#avis-{referral_id} .current-avis")).to_have_text(
            "favorable — Domicile adapté, aidant présent")
        await visit.screenshot(path=str(ARTIFACTS / "liaison-page.png"), full_page=True)
        given = await state(referral_id)
        assert given["current_avis"] == {"eligible": True, "reason": None, "text": "Domicile adapté, aidant présent"}

        # 3. The HAD confirms: admitted as usual from then on.
        await pending.get_by_role("button", name=f"Confirmer l’admission — demande {referral_id[:8]}").click()
        await expect(page.locator("#action-result")).to_have_text(
            "Admission confirmée après évaluation : le patient est attendu.", timeout=5_000)
        await expect(page.locator(f"#patient-{referral_id}")).to_contain_text("Déclarer l’admission", timeout=5_000)
        assert (await state(referral_id))["evaluation_pending"] is False

        # 4. A second referral accepted pending evaluation, then withdrawn with a reason.
        other_id = await post()
        offer = page.locator(f"#offer-{other_id}")
        await expect(offer).to_be_visible(timeout=60_000)
        await offer.get_by_role("button", name=f"Accepter sous réserve d’évaluation la demande {other_id[:8]}").click()
        withdrawn = page.locator(f"#patient-{other_id}")
        await expect(withdrawn).to_contain_text("Évaluation en cours", timeout=5_000)
        withdraw = withdrawn.get_by_role("button", name=f"Retirer l’acceptation — demande {other_id[:8]}")
        await withdraw.click()  # no reason chosen: the form asks for one, nothing is sent
        assert await withdrawn.get_by_label("Motif", exact=True).evaluate("el => el.validity.valueMissing")
        assert (await state(other_id))["evaluation_pending"] is True
        await withdrawn.get_by_label("Motif", exact=True).select_option("SOCIAL_NOT_ELIGIBLE")
        precision = withdrawn.get_by_label("Précision (facultatif, sans donnée identifiante)")
        await precision.fill("Logement inadapté")
        # The page refreshes live while she types (here: her HAD declares again): what she chose
        # and typed is still there in the re-rendered patient.
        await withdrawn.evaluate("el => { el.dataset.beforeRefresh = 'yes'; }")
        assert (await capacity.post(f"/v1/hads/{first}/capacity", headers=await token("had", finess=first),
                                    json={"places_available": 3, "admissions_possible_today": 3,
                                          "status": "OPEN"})).status_code == 201
        await expect(page.locator(f"#patient-{other_id}:not([data-before-refresh])")).to_have_count(1, timeout=10_000)
        assert await withdrawn.get_by_label("Motif", exact=True).input_value() == "SOCIAL_NOT_ELIGIBLE"
        assert await precision.input_value() == "Logement inadapté"
        await withdraw.click()
        await expect(page.locator("#action-result")).to_have_text(
            "Acceptation retirée : la place est libérée, la demande va à une autre HAD.", timeout=5_000)
        await expect(page.locator(f"#patient-{other_id}")).to_have_count(0, timeout=10_000)

        async def offered_to_second() -> dict | None:
            now = await state(other_id)
            offer = now.get("current_offer") or {}
            return now if now["status"] == "OFFERED" and offer.get("had_finess") == second else None

        now = await eventually(offered_to_second, timeout=60, interval=0.2, what="the offer to the next HAD")
        assert first in now["tried_hads"]
        await page.screenshot(path=str(ARTIFACTS / "had-page-withdrawn.png"), full_page=True)
