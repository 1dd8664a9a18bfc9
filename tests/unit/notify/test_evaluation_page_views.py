"""The pages of the evaluation before admission, rendered from what the referral service answers:
an HAD's three answers to an offer and its pending acceptance to confirm or withdraw (the place
held, the admission target running), the desk's badge and avis, the liaison nurse's list and
avis form, and the form's rules (the field named when it is not an avis)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from reflexe_common.errors import ApiError
from reflexe_notify.entrypoints.pages import views
from reflexe_notify.entrypoints.pages.liaison import avis_body

AT = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
RID = "0b8f5c3e-1111-4222-8333-444455556666"
HAD = "340000017"
REFERRAL = {
    "referral_id": RID, "department": "34", "status": "OFFERED", "requested_at": AT.isoformat(),
    "source": {"kind": "ED", "finess": "340780477", "unit": "UHCD"},
    "patient": {"pseudonym": "psd-1", "care_commune": "34172", "place_of_care": "HOME"},
    "clinical": {"main_mpp": "04", "associated_mpp": [], "karnofsky": 30, "equipment": [], "palliative": True,
                 "urgency": "WITHIN_24H", "planned_date": None, "expected_duration_days": 10},
    "conditions": {"patient_consent": True, "gp_agreement": True, "caregiver_present": True},
    "avis": None, "current_avis": None, "desired_admission_at": None, "evaluation_pending": False,
    "current_offer": {"offer_id": "o1", "had_finess": HAD, "hold_until": (AT + timedelta(minutes=30)).isoformat(),
                      "explanation": "Proposé à HAD A", "by_desk": False},
    "clocks": [],
}
PENDING = {**REFERRAL, "status": "ACCEPTED", "evaluation_pending": True, "current_offer": None,
           "accepted_had": HAD, "accepted_at": (AT - timedelta(hours=2)).isoformat(),
           "current_avis": {"eligible": True, "reason": None, "text": "vue au lit <b>ok</b>"},
           "clocks": [{"kind": "ADMISSION_OVERDUE", "due_at": (AT + timedelta(hours=22)).isoformat(), "offer_id": None}]}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def _snapshot(offers, patients) -> dict:
    return {"offers": offers, "patients": patients, "had": {"name": "HAD A", "authorised_places": 3}, "latest": None,
            "history": [], "head": 0, "department": "34"}


def test_an_offer_has_a_third_answer_accepting_pending_evaluation() -> None:
    html = str(views.offers_html([REFERRAL], HAD, now=AT))
    actions = re.findall(r'action="/had/340000017/actions/(\w+)"', html)
    assert actions == ["accept", "accept_pending", "decline"]
    assert "Accepter sous réserve d’évaluation" in html
    form = html.split('actions/accept_pending"')[1].split("</form>")[0]
    assert 'name="offer_id" value="o1"' in form and f'name="referral_id" value="{RID}"' in form


def test_an_acceptance_pending_evaluation_shows_its_state_and_the_admission_target() -> None:
    html = views.had_page(HAD, "had:340000017", _snapshot([], [PENDING]), now=AT)
    article = html.split(f'id="patient-{RID}"')[1].split("</article>")[0]
    text = _text(article)
    assert "Évaluation en cours" in text
    assert "depuis 2 h 00 min" in text, "the time since the acceptance, running"
    assert f'data-since="{PENDING["accepted_at"]}"' in article
    assert "Objectif d’admission : 23/11/2026 09:15" in text and "dans 22 h 00 min" in text, "on Paris's clock"
    assert f'data-due="{PENDING["clocks"][0]["due_at"]}"' in article
    assert "Avis HAD favorable — vue au lit &lt;b&gt;ok&lt;/b&gt;" in _text(article.replace("</dt>", " "))
    assert re.findall(r'actions/(\w+)"', article) == ["confirm", "withdraw"]
    withdraw = article.split('actions/withdraw"')[1].split("</form>")[0]
    assert 'name="reason" required' in withdraw and withdraw.count("<option") == 12
    assert "Déclarer l’admission" not in article, "the admission waits for the confirmation"


def test_an_acceptance_without_evaluation_is_admitted_as_before() -> None:
    accepted = {**PENDING, "evaluation_pending": False}
    html = views.had_page(HAD, "had:340000017", _snapshot([], [accepted]), now=AT)
    assert "Évaluation en cours" not in html and "actions/confirm" not in html
    assert "Déclarer l’admission" in html


def test_the_desk_queue_and_referral_page_show_the_pending_evaluation_and_the_liaison_avis() -> None:
    row = {**PENDING, "waiting_seconds": 7200, "tried_hads": [HAD], "departments_searched": ["34"],
           "current_avis": {"eligible": False, "reason": "MEDICAL_NOT_ELIGIBLE", "text": ""}}
    queue = _text(str(views.queue_html({"referrals": [row]}, None, now=AT, desk="34")))
    assert "Évaluation en cours" in queue
    assert "Avis HAD : défavorable (non éligible (médical))" in queue
    detail = {**row, "patient": {**row["patient"], "birth_year": 1940, "sex": "F", "ehpad_finess": None},
              "source": {**row["source"], "prescriber_id": None}, "ed_arrival_at": None, "ed_exited_at": None,
              "admitted_had": None, "discharged_at": None, "closed_at": None, "closed_reason": None}
    page = _text(views.referral_page("34", "Hérault", "desk:34", detail, [], {HAD: "HAD A"}, now=AT))
    assert "Avis HAD défavorable (non éligible (médical)) (infirmière de liaison, après la demande)" in page
    assert "Évaluation Évaluation en cours acceptée sous réserve de l’évaluation de l’HAD depuis 2 h 00 min" in page
    plain = {**detail, "evaluation_pending": False, "current_avis": None}
    page = _text(views.referral_page("34", "Hérault", "desk:34", plain, [], {HAD: "HAD A"}, now=AT))
    assert "Évaluation en cours" not in page and "Avis HAD non donné" in page


LIAISON_ROW = {"referral_id": RID, "department": "34", "status": "OFFERED", "requested_at": AT.isoformat(),
               "source": {"kind": "ED", "finess": "340780477", "unit": "UHCD 2"},
               "patient": {"pseudonym": "psd-<1>", "care_commune": "34172", "place_of_care": "HOME"},
               "clinical": REFERRAL["clinical"], "place_held": True, "held_by_own_had": False,
               "evaluation_pending": False,
               "current_avis": {"eligible": False, "reason": "SOCIAL_NOT_ELIGIBLE", "text": "isolement"}}


def test_the_liaison_page_lists_each_department_with_what_the_avis_needs() -> None:
    html = views.liaison_page(HAD, "liaison:340000017", {"34": [LIAISON_ROW], "30": [], "12": None}, "Avis HAD enregistré.",
                              now=AT)
    text = _text(html)
    assert "psd-&lt;1&gt;" in text and "Urgences, FINESS 340780477, service UHCD 2" in text
    assert "04 — Soins palliatifs" in text and "30 %" in text and "Montpellier (34172) — Domicile" in text
    assert "Place réservée par une HAD" in text and "Proposée" in text
    assert "Avis HAD actuel défavorable (non éligible (social)) — isolement" in text
    assert text.count("Aucune demande ouverte") == 1 and "Le service des demandes ne répond pas" in text
    assert 'id="action-result" role="status" aria-live="polite">Avis HAD enregistré.' in html
    form = html.split('action="/liaison/340000017/avis"')[1].split("</form>")[0]
    assert f'name="referral_id" value="{RID}"' in form
    assert 'value="no" checked' in form and 'value="SOCIAL_NOT_ELIGIBLE" selected' in form, "the current avis, to update"
    assert ">isolement</textarea>" in form and "Mettre à jour l’avis HAD" in form
    assert "votre avis est enregistré, c’est elle qui refuse" in _text(form), "a place is held: the avis closes nothing"


def test_her_own_hads_pending_evaluation_is_named_on_her_page() -> None:
    mine = {**LIAISON_ROW, "status": "ACCEPTED", "held_by_own_had": True, "evaluation_pending": True,
            "current_avis": None}
    text = _text(views.liaison_page(HAD, "liaison:340000017", {"34": [mine]}, now=AT))
    assert "Évaluation en cours (votre HAD)" in text and "Donner l’avis HAD" in text and "Avis HAD actuel non donné" in text


@pytest.mark.parametrize(("fields", "named"), [
    ({"eligible": "yes"}, ["referral_id"]),
    ({"referral_id": RID}, ["eligible"]),
    ({"referral_id": RID, "eligible": "maybe"}, ["eligible"]),
    ({"referral_id": RID, "eligible": "no"}, ["reason"]),
    ({"referral_id": RID, "eligible": "no", "reason": "BECAUSE"}, ["reason"]),
])
def test_a_form_that_is_not_an_avis_is_refused_naming_the_field(fields: dict, named: list[str]) -> None:
    with pytest.raises(ApiError) as refused:
        avis_body(fields)
    assert refused.value.status == 422 and [e["field"] for e in refused.value.errors] == named


def test_the_form_becomes_the_referral_services_avis() -> None:
    assert avis_body({"referral_id": RID, "eligible": "yes", "reason": "", "text": "ok"}) == {
        "eligible": True, "reason": None, "text": "ok"}
    assert avis_body({"referral_id": RID, "eligible": "no", "reason": "OTHER"}) == {
        "eligible": False, "reason": "OTHER", "text": ""}
