"""The HAD page's pure rules: what an HAD's stream entry may carry, where its e-mails and webhooks
link to, and the page's HTML (escaped, in French, with what the nurse needs to decide)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from reflexe_notify.domain.desk import DeskEvent
from reflexe_notify.domain.email import compose, page_url
from reflexe_notify.entrypoints.pages import views
from reflexe_notify.service_layer.had_stream import _for_had, stream_key

AT = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
RID = "0b8f5c3e-1111-4222-8333-444455556666"


def test_an_had_entry_keeps_only_its_own_part_of_the_explanation() -> None:
    event = DeskEvent("34", "evt-1", "offer.proposed", AT, {
        "referral_id": RID, "department": "34", "offer_id": "o1", "had_finess": "340000017", "by_desk": False,
        "hold_until": AT.isoformat(),
        "explanation": "Proposé à HAD A (340000017) : 2 places; ensuite : HAD B (340000025) 5 places; exclus : HAD C (340000033) (saturée).",
        "ranking": ["340000025"]})
    entry = _for_had(event, "340000017")
    assert entry.department == stream_key("340000017") == "had:340000017"
    assert "340000025" not in json.dumps(entry.payload(1)), "no other HAD's name or figures"
    assert entry.data["explanation"].startswith("Proposé à HAD A (340000017)") and "ranking" not in entry.data


def test_an_had_history_tells_an_acceptance_pending_evaluation_from_a_plain_one() -> None:
    def title(pending: bool) -> str:
        event = DeskEvent("34", f"evt-{pending}", "offer.accepted", AT, {
            "referral_id": RID, "department": "34", "offer_id": "o1", "had_finess": "340000017",
            "pending_evaluation": pending})
        return _for_had(event, "340000017").payload(1)["title"]

    assert (title(True), title(False)) == ("Offre acceptée sous réserve", "Offre acceptée")


def test_e_mails_and_webhooks_to_an_had_link_to_its_own_page() -> None:
    assert page_url("https://reflexe.example/", "had:340000017", "34") == "https://reflexe.example/had/340000017"
    assert page_url("https://reflexe.example", "desk:34", "34") == "https://reflexe.example/desk/34"
    assert page_url(None, "had:340000017", "34") is None
    body = json.dumps({"type": "offer.proposed", "timestamp": AT.isoformat(), "data": {
        "referral_id": RID, "department": "34", "had_finess": "340000017", "page_url": "https://r.example/had/340000017"}})
    message = compose(body, "msg_1", "a@b.test", "had@c.test", "https://r.example/had/340000017", for_had=True)
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Page de votre HAD : https://r.example/had/340000017" in text and "page_url" not in text
    assert "Ouvrir la page de votre HAD" in html and "tableau de bord du bureau" not in html


def test_an_offer_shows_what_is_needed_to_decide_escaped() -> None:
    referral = {
        "referral_id": RID, "department": "34", "status": "OFFERED", "requested_at": AT.isoformat(),
        "source": {"kind": "ED"}, "patient": {"care_commune": "34172", "place_of_care": "HOME"},
        "clinical": {"main_mpp": "04", "associated_mpp": ["09"], "karnofsky": 30, "equipment": ["PCA_PUMP"],
                     "palliative": True, "urgency": "PLANNED", "planned_date": "2026-11-24", "expected_duration_days": 20},
        "conditions": {"patient_consent": True, "gp_agreement": False, "caregiver_present": True},
        "avis": {"eligible": True, "reason": None, "text": "<script>x</script>"},
        "desired_admission_at": None,
        "current_offer": {"offer_id": "o1", "had_finess": "340000017", "hold_until": "2026-11-22T10:45:00+00:00",
                          "explanation": "Proposé à HAD A", "by_desk": True},
    }
    html = views.offers_html([referral], "340000017", now=AT)
    for fact in ("04 — Soins palliatifs", "30 %", "Pompe PCA", "Programmée, le 24/11/2026", "20 jours",
                 "Accord du médecin traitant</dt><dd>non", "Montpellier (34172)", "expire dans 30 min",
                 "Choix du bureau", "&lt;script&gt;"):
        assert fact in html, fact
    assert "<script>x" not in html
    assert html.count("<option") == 12  # a reason is chosen from the vocabulary (and none preselected)
