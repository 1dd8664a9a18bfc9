"""The evaluation before admission on the pages, on the real broker and database (referral and
capacity in-process, notify's app): an HAD accepts an offer pending evaluation from its page, sees
it held with the admission target running, confirms it (then admits as usual) or withdraws it
with a reason (the next HAD is offered it); the desk's queue shows the pending state and the avis;
a liaison nurse logs in to her own page, sees the open referrals of her HAD's department reduced
to what the avis needs, and gives or updates it with her own token."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

import pytest
from markupsafe import escape

from reflexe_common.geography import Geography
from tests.integration.notify.kit import in_process_platform, log_in, page_browser, register_had
from tests.integration.notify.test_had_page import offered_on_page, post_referral, status_of
from tests.support.data import unique_finess
from tests.support.services import eventually, token
from tests.support.territory import own_communes, own_department

pytestmark = pytest.mark.integration
# A department of this module's own: the desk's queue and the liaison nurse's list (the pages show one
# page of each) hold this module's referrals only.
DEPARTMENT = own_department()
DESK = token("desk", department=DEPARTMENT)
JSON = {"Accept": "application/json"}
# Communes only this module uses: each test's HADs are the only ones serving its commune (nobody the last).
CONFIRM_COMMUNE, WITHDRAW_COMMUNE, LIAISON_COMMUNE = own_communes(3, DEPARTMENT)


@pytest.fixture(scope="module")
async def platform(topics):
    async with in_process_platform(topics) as running:
        yield running


async def on_patients(page, had: str, referral_id: str, needle: str) -> str:
    async def probe():
        patients = (await page.get(f"/had/{had}/fragments")).json()["patients"]
        block = patients.split(f'id="patient-{referral_id}"')
        return patients if len(block) > 1 and needle in block[1].split("</article>")[0].split("</tr>")[0] else None

    return await eventually(probe, timeout=30, interval=0.2, what=f"{needle!r} for {referral_id} on the HAD page")


async def test_an_had_accepts_pending_evaluation_then_confirms_and_admits(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    had = await register_had(capacity, CONFIRM_COMMUNE, department=DEPARTMENT)
    async with page_browser(platform) as page, page_browser(platform) as desk:
        await log_in(page, "had", f"had:finess={had}")
        await log_in(desk, "desk", f"desk:department={DEPARTMENT}")
        referral_id = await post_referral(referral, CONFIRM_COMMUNE)
        fragments = await offered_on_page(page, had, referral_id, timeout=120)
        assert "Accepter sous réserve d’évaluation" in fragments["offers"]
        offer_id = (await status_of(referral, referral_id, DESK))["current_offer"]["offer_id"]

        missing = await page.post(f"/had/{had}/actions/accept_pending", data={"referral_id": referral_id})
        assert missing.status_code == 422 and [e["field"] for e in missing.json()["errors"]] == ["offer_id"]
        pending = await page.post(f"/had/{had}/actions/accept_pending", headers=JSON,
                                  data={"referral_id": referral_id, "offer_id": offer_id})
        assert pending.status_code == 200 and pending.json()["message"].startswith("Offre acceptée sous réserve"), pending.text
        state = await status_of(referral, referral_id, DESK)
        assert (state["status"], state["evaluation_pending"], state["accepted_had"]) == ("ACCEPTED", True, had)
        assert [c["kind"] for c in state["clocks"]] == ["ADMISSION_OVERDUE"], "no hold expiry: the place stays held"

        patients = await on_patients(page, had, referral_id, "Évaluation en cours")
        block = patients.split(f'id="patient-{referral_id}"')[1].split("</article>")[0]
        assert "Objectif d’admission" in block and f'data-due="{state["clocks"][0]["due_at"]}"' in block
        assert "Confirmer l’admission" in block and "Retirer l’acceptation" in block and "Déclarer l’admission" not in block
        # Admission waits for the confirmation: the referral service's refusal, told in French.
        early = await page.post(f"/had/{had}/actions/admit", data={"referral_id": referral_id})
        assert early.status_code == 409 and "EVALUATION_PENDING" in early.json()["message"]

        # The desk sees it pending, in its queue and on the referral's page.
        queue = (await desk.get(f"/desk/{DEPARTMENT}/fragments")).json()["queue"]
        row = queue.split(f'id="ref-{referral_id}"')[1].split("</tr>")[0]
        assert "Évaluation en cours" in row
        detail = await desk.get(f"/desk/{DEPARTMENT}/referrals/{referral_id}")
        assert detail.status_code == 200 and 'id="evaluation"' in detail.text

        confirmed = await page.post(f"/had/{had}/actions/confirm", headers=JSON, data={"referral_id": referral_id})
        assert confirmed.status_code == 200 and confirmed.json()["ok"], confirmed.text
        assert (await status_of(referral, referral_id, DESK))["evaluation_pending"] is False
        await on_patients(page, had, referral_id, "Déclarer l’admission")
        admitted = await page.post(f"/had/{had}/actions/admit", data={"referral_id": referral_id})
        assert admitted.status_code == 200, admitted.text
        assert (await status_of(referral, referral_id, DESK))["status"] == "ADMITTED"


async def test_an_had_withdraws_with_a_reason_and_the_next_had_is_offered(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    first = await register_had(capacity, WITHDRAW_COMMUNE, department=DEPARTMENT)
    async with page_browser(platform) as page:
        await log_in(page, "had", f"had:finess={first}")
        referral_id = await post_referral(referral, WITHDRAW_COMMUNE)
        await offered_on_page(page, first, referral_id, timeout=120)
        second = await register_had(capacity, WITHDRAW_COMMUNE, department=DEPARTMENT)  # registered after: the first is offered it first
        offer_id = (await status_of(referral, referral_id, DESK))["current_offer"]["offer_id"]
        assert (await page.post(f"/had/{first}/actions/accept_pending",
                                data={"referral_id": referral_id, "offer_id": offer_id})).status_code == 200
        await on_patients(page, first, referral_id, "Retirer l’acceptation")

        no_reason = await page.post(f"/had/{first}/actions/withdraw", data={"referral_id": referral_id, "reason": ""})
        assert no_reason.status_code == 422 and [e["field"] for e in no_reason.json()["errors"]] == ["reason"]
        assert (await status_of(referral, referral_id, DESK))["evaluation_pending"] is True, "nothing forwarded"
        withdrawn = await page.post(f"/had/{first}/actions/withdraw", headers=JSON, data={
            "referral_id": referral_id, "reason": "SOCIAL_NOT_ELIGIBLE", "text": "Logement inadapté"})
        assert withdrawn.status_code == 200 and withdrawn.json()["ok"], withdrawn.text

        async def offered_to_second():
            state = await status_of(referral, referral_id, DESK)
            offer = state.get("current_offer") or {}
            return state if state["status"] == "OFFERED" and offer.get("had_finess") == second else None

        state = await eventually(offered_to_second, timeout=60, what="the offer to the next HAD")
        assert first in state["tried_hads"]
        timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK)).json()["events"]
        withdrawal = next(e for e in timeline if e["type"] == "AcceptanceWithdrawn")
        assert withdrawal["actor"] == f"had:{first}" and withdrawal["reason"] == "SOCIAL_NOT_ELIGIBLE"

        async def gone_from_first():
            patients = (await page.get(f"/had/{first}/fragments")).json()["patients"]
            return patients if f'id="patient-{referral_id}"' not in patients else None

        await eventually(gone_from_first, what="the withdrawn referral off the first HAD's page")


async def test_a_liaison_nurse_gives_and_updates_the_avis_from_her_page(platform: dict[str, Any]) -> None:
    referral = platform["referral"]
    had = unique_finess(DEPARTMENT)  # her HAD serves no commune of this module: the search waits, no place is held
    referral_id = await post_referral(referral, LIAISON_COMMUNE, clinical={"karnofsky": 40})
    async with page_browser(platform) as page:
        assert (await page.get(f"/liaison/{had}")).headers["location"] == f"/liaison?next=/liaison/{had}"
        login = await log_in(page, "liaison", f"liaison:finess={had},department={DEPARTMENT}")
        assert login.status_code == 303 and login.headers["location"] == f"/liaison/{had}", login.text
        cookie = next(c for c in login.headers.get_list("set-cookie") if c.startswith("reflexe_liaison="))
        assert "path=/liaison" in cookie.lower() and "httponly" in cookie.lower()

        listed = await page.get(f"/liaison/{had}")
        assert listed.status_code == 200 and f"Département {DEPARTMENT}" in listed.text
        article = listed.text.split(f'id="avis-{referral_id}"')[1].split("</article>")[0]
        row = (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK)).json()
        assert row["patient"]["pseudonym"] in article and "40 %" in article and escape(f"{Geography.load().commune(LIAISON_COMMUNE).name} ({LIAISON_COMMUNE})") in article
        assert str(row["patient"]["birth_year"]) not in article, "no birth year on her page"
        assert "Avis HAD actuel</dt><dd class=\"current-avis\">non donné" in article

        # An unfavourable avis without its reason: refused naming the field, nothing forwarded.
        refused = await page.post(f"/liaison/{had}/avis", headers=JSON, data={"referral_id": referral_id, "eligible": "no"})
        assert refused.status_code == 422 and [e["field"] for e in refused.json()["errors"]] == ["reason"]
        back = await page.post(f"/liaison/{had}/avis", data={"referral_id": referral_id, "eligible": "no"})
        assert back.status_code == 303 and "Avis non transmis" in unquote(back.headers["location"])

        given = await page.post(f"/liaison/{had}/avis", data={"referral_id": referral_id, "eligible": "yes",
                                                              "reason": "", "text": "Domicile adapté"})
        assert given.status_code == 303, given.text
        assert unquote(given.headers["location"]) == f"/liaison/{had}?msg=Avis HAD enregistré.#avis-{referral_id}"
        state = await status_of(referral, referral_id, DESK)
        assert state["current_avis"] == {"eligible": True, "reason": None, "text": "Domicile adapté"}
        timeline = (await referral.get(f"/v1/referrals/{referral_id}/timeline", headers=DESK)).json()["events"]
        assert [e["actor"] for e in timeline if e["type"] == "AvisGiven"] == [f"liaison:{had}"], "her own token"
        shown = (await page.get(f"/liaison/{had}?msg=x")).text.split(f'id="avis-{referral_id}"')[1].split("</article>")[0]
        assert "favorable — Domicile adapté" in shown and 'value="yes" required checked' in shown

        # Updated to unfavourable while the search goes on: the referral closes as ineligible.
        updated = await page.post(f"/liaison/{had}/avis", headers=JSON, data={
            "referral_id": referral_id, "eligible": "no", "reason": "MEDICAL_NOT_ELIGIBLE", "text": ""})
        assert updated.status_code == 200 and updated.json()["ok"], updated.text
        assert (await status_of(referral, referral_id, DESK))["status"] == "INELIGIBLE"
        assert f'id="avis-{referral_id}"' not in (await page.get(f"/liaison/{had}")).text, "closed: off her list"

        # The desk's queue no longer lists it; its page shows the liaison's avis.
        async with page_browser(platform) as desk:
            await log_in(desk, "desk", f"desk:department={DEPARTMENT}")
            detail = await desk.get(f"/desk/{DEPARTMENT}/referrals/{referral_id}")
            assert re.search(r"défavorable \(non éligible \(médical\)\)\s*<span class=\"muted\">\(infirmière de liaison",
                             detail.text), detail.text[:200]


async def test_a_liaison_nurse_sees_only_her_own_page_and_is_routed_to_it(platform: dict[str, Any]) -> None:
    referral = platform["referral"]
    had, other = unique_finess(DEPARTMENT), unique_finess(DEPARTMENT)
    async with page_browser(platform) as page:
        await log_in(page, "liaison", f"liaison:finess={had},department={DEPARTMENT}")
        assert (await page.get(f"/liaison/{other}")).status_code == 403
        assert (await page.post(f"/liaison/{other}/avis", data={"referral_id": "x", "eligible": "yes"})).status_code == 403
        assert (await page.post(f"/liaison/{had}/avis", headers={"Origin": "https://elsewhere.test"},
                                data={"referral_id": "x", "eligible": "yes"})).status_code == 403
        # Her session opens no HAD page, and her token no referral row.
        assert (await page.get(f"/had/{had}")).status_code == 303
        assert (await referral.get(f"/v1/departments/{DEPARTMENT}/referrals", headers=token("liaison", finess=had,
                                                                                department=DEPARTMENT))).status_code == 403
        # Her list through the API: her HAD's departments only, reduced.
        liaison = token("liaison", finess=had, department=DEPARTMENT)
        assert (await referral.get("/v1/liaison/departments/31/referrals", headers=liaison)).status_code == 403
        referral_id = await post_referral(referral, LIAISON_COMMUNE)
        rows, offset = [], 0
        while offset is not None:  # every page: other tests' referrals may come first
            listed = (await referral.get(f"/v1/liaison/departments/{DEPARTMENT}/referrals", params={"offset": offset},
                                         headers=liaison)).json()
            rows, offset = rows + listed["referrals"], listed["next_offset"]
        assert referral_id in {r["referral_id"] for r in rows}
        assert all(r["department"] == DEPARTMENT and "birth_year" not in r["patient"] and "tried_hads" not in r
                            for r in rows)
        out = await page.post("/liaison/logout")
        assert out.status_code == 303 and (await page.get(f"/liaison/{had}")).status_code == 303

    async with page_browser(platform) as lost:
        # Logging in at the HAD's page, she is sent to her own login (the provider's session makes it seamless).
        routed = await log_in(lost, "had", f"liaison:finess={had},department={DEPARTMENT}")
        assert routed.status_code == 303 and routed.headers["location"] == "/liaison/login"
        assert "reflexe_had" not in lost.cookies
        # A desk at the liaison page is refused, not routed.
        turned_away = await log_in(lost, "liaison", f"desk:department={DEPARTMENT}")
        assert turned_away.status_code == 403 and "infirmière de liaison" in turned_away.text
