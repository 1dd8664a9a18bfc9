"""One referral's page on the desk, on the real broker and database with referral, capacity and
notify in process: the desk of the referral's department, logged in through the suite's provider,
opens it from its queue and reads every field of the request, the current offer and clocks, and
the timeline with what each actor did (the EHPAD that asked, the matcher, the HAD, the desk);
another department's desk is refused; nothing of the patient's identity is on it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html import unescape
from typing import Any

import pytest

from reflexe_common.geography import Geography
from tests.integration.notify.kit import in_process_platform, log_in, page_browser, register_had
from tests.support.data import full_referral_body, pseudonym, unique_finess
from tests.support.privacy_scan import Findings, PrivacyScan
from tests.support.services import eventually, token
from tests.support.territory import own_commune, own_department

pytestmark = pytest.mark.integration
# A department of this module's own: its desk's queue holds this module's referral only (the page shows one page of it).
DEPARTMENT = own_department()
DESK = token("desk", department=DEPARTMENT)
COMMUNE = own_commune(DEPARTMENT)
# The patient as the EHPAD knows them: only the pseudonym derived from it may leave the EHPAD.
NIR_BODY = "1360434172123"
NIR = f"{NIR_BODY}{97 - int(NIR_BODY) % 97:02d}"
IDENTITY = ("Marcel Durand", "Durand Marcel", NIR, NIR_BODY, "1936-04-12", "12/04/1936", "19360412", "12041936")


@pytest.fixture(scope="module")
async def platform(topics) -> AsyncIterator[dict[str, Any]]:
    async with in_process_platform(topics) as running:
        yield running


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


async def _status(referral, referral_id: str, wanted: str) -> dict | None:
    view = (await referral.get(f"/v1/referrals/{referral_id}", headers=DESK)).json()
    return view if view["status"] == wanted else None


async def test_the_desk_reads_the_whole_referral_and_who_did_what(platform: dict[str, Any]) -> None:
    referral, capacity = platform["referral"], platform["capacity"]
    had = await register_had(capacity, COMMUNE, "HAD Cambon", department=DEPARTMENT,
                             mpp_supported=["03", "04", "07", "09", "14", "25"])
    ehpad = unique_finess(DEPARTMENT)
    body = full_referral_body(ehpad, COMMUNE)
    body["patient"]["pseudonym"] = pseudonym(NIR)
    posted = await referral.post("/v1/referrals", json=body, headers=token("hospital", finess=ehpad))
    assert posted.status_code == 201, posted.text
    referral_id = body["referral_id"]
    # A new matcher first re-reads what its group had not committed: the first offer may take a while.
    offered = await eventually(lambda: _status(referral, referral_id, "OFFERED"), timeout=120, interval=0.3,
                               what="the offer to the module's HAD")
    assert offered["current_offer"]["had_finess"] == had

    async with page_browser(platform) as page, page_browser(platform) as other_desk:
        path = f"/desk/{DEPARTMENT}/referrals/{referral_id}"
        assert (await page.get(path)).headers["location"] == f"/desk?next={path}"
        assert (await log_in(page, "desk", f"desk:department={DEPARTMENT}")).status_code == 303

        fragments = (await page.get(f"/desk/{DEPARTMENT}/fragments")).json()
        assert f'href="{path}"' in fragments["queue"], "each queue row links to its referral's page"

        open_page = await page.get(path)
        assert open_page.status_code == 200, open_page.text
        assert open_page.headers["content-security-policy"].startswith("default-src 'self'")
        text = _text(open_page.text)
        assert "HAD Cambon (HAD, FINESS" in text.split("Offre en cours")[2][:200], "the current offer, by name"
        assert "Fin de la réservation de place" in text and "expire dans" in text

        accepted = await referral.post(f"/v1/referrals/{referral_id}/offers/{offered['current_offer']['offer_id']}/accept",
                                       headers=token("had", finess=had))
        assert accepted.status_code == 200, accepted.text
        closed = await page.post(f"/desk/{DEPARTMENT}/actions/close", headers={"Accept": "application/json", "Origin": "https://notify"},
                                 data={"referral_id": referral_id, "reason": "PATIENT_REFUSED",
                                       "text": "Le patient préfère rester à l'EHPAD."})
        assert closed.status_code == 200, closed.text

        shown = await page.get(path)
        assert shown.status_code == 200
        text = _text(shown.text)
        patient, source, clinical = body["patient"], body["source"], body["clinical"]
        planned = "/".join(reversed(clinical["planned_date"].split("-")))
        for label, value in [
            ("Pseudonyme", patient["pseudonym"]), ("Année de naissance", "1936"), ("Sexe", "Homme"),
            ("Commune de prise en charge", f"{Geography.load().commune(COMMUNE).name} ({COMMUNE})"), ("Lieu de soins", "EHPAD"),
            ("EHPAD (FINESS)", patient["ehpad_finess"]), ("Type d’origine", "EHPAD"),
            ("Établissement demandeur (FINESS)", ehpad), ("Service", source["unit"]),
            ("Prescripteur (RPPS ou identifiant local)", source["prescriber_id"]),
            ("MPP principal", "04 — "), ("Indice de Karnofsky", "30 %"), ("Équipements", "Oxygène, Pompe PCA"),
            ("Soins palliatifs", "oui"), ("Urgence", "Programmée"), ("Date programmée", planned),
            ("Durée prévue", "23 jours"), ("Consentement du patient", "oui"), ("Accord du médecin traitant", "oui"),
            ("Aidant présent", "non"), ("Avis HAD", "favorable — Avis favorable, équipe de liaison"),
            ("Statut", "Clôturée (refus du patient)"), ("Acceptée par", "HAD Cambon (HAD, FINESS"),
            ("HAD sollicitées", f"HAD Cambon ({had})"), ("Départements de recherche", DEPARTMENT),
        ]:
            assert f"{label} {value}" in text, (label, value)
        for label in ("Arrivée aux urgences", "Demandée le", "Admission souhaitée", "Clôturée le"):
            assert re.search(rf"{label} \d\d/\d\d/20\d\d \d\d:\d\d", text), label
        assert all(code in text.split("MPP associés")[1][:200] for code in ("09 — ", "25 — "))

        timeline = [_text(li).strip() for li in re.findall(r"<li class=\"h-[^\"]*\" data-type=.*?</li>", shown.text, re.S)]
        assert [re.search(r"\d\d:\d\d (.+?) — ", entry).group(1) for entry in timeline] == [
            "Nouvelle demande", "Offre proposée", "Offre acceptée", "Demande clôturée"]
        assert timeline[0].endswith(f"Par : EHPAD (FINESS {ehpad})")
        assert timeline[1].endswith("Par : Réflexe (automatique)")
        assert timeline[2].endswith(f"Par : HAD Cambon (HAD, FINESS {had})")
        assert "refus du patient" in timeline[3] and "Le patient préfère rester à l'EHPAD." in timeline[3]
        assert timeline[3].endswith(f"Par : Bureau de coordination ({DEPARTMENT})")

        findings = Findings()
        PrivacyScan(IDENTITY).check("desk referral page", shown.text, findings)
        assert findings.found == [], findings.found

        # Another department's desk: refused on this department's page, unknown on its own.
        assert (await log_in(other_desk, "desk", "desk:department=31")).status_code == 303
        refused = await other_desk.get(path)
        assert refused.status_code == 403 and f"ne peut pas voir le département {DEPARTMENT}" in refused.text
        assert patient["pseudonym"] not in refused.text
        unknown = await other_desk.get(f"/desk/31/referrals/{referral_id}")
        assert unknown.status_code == 404 and patient["pseudonym"] not in unknown.text
        assert (await page.get(f"/desk/{DEPARTMENT}/referrals/not-a-referral")).status_code == 404
