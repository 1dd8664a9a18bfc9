"""One referral's page on the desk, without I/O: rendered from the referral service's own views
(the whole request, the state, the timeline as the desk reads them), every field in French,
every value escaped, every event of the lifecycle with a French title and its actor."""

from __future__ import annotations

import re
import typing
from datetime import timedelta
from html import unescape

from reflexe_common.auth import Principal, Role
from reflexe_notify.domain.desk import TIMELINE_KINDS, describe_timeline_event
from reflexe_notify.entrypoints.pages import labels, views
from reflexe_referral.domain import Referral, events
from reflexe_referral.entrypoints.api import _event_view
from reflexe_referral.entrypoints.schemas import referral_view
from tests.unit.referral.conftest import REQUESTED_AT, make_full_request

DESK = Principal(Role.DESK, "d", department="34")
X, Y = "340000011", "340000029"


def _history() -> tuple[dict, list[dict]]:
    """A referral offered to X, declined with a text, then offered by the desk to Y."""
    history = list(Referral.request(make_full_request(), REQUESTED_AT))
    referral = Referral.from_events(history)
    steps = [
        lambda r: r.record_offer("o1", X, REQUESTED_AT + timedelta(minutes=30),
                                 f"Proposé à HAD X ({X}) : <b>la plus proche</b>", False, REQUESTED_AT + timedelta(minutes=1)),
        lambda r: r.decline("o1", X, "NO_CAPACITY", "équipe <complète>", REQUESTED_AT + timedelta(minutes=2)),
        lambda r: r.record_offer("o2", Y, REQUESTED_AT + timedelta(minutes=40), f"Proposé à HAD Y ({Y})", True,
                                 REQUESTED_AT + timedelta(minutes=3)),
    ]
    for step in steps:
        new = step(referral)
        for event in new:
            referral.apply(event)
        history += new
    return referral_view(referral), [_event_view(e, DESK) for e in history]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_every_field_of_the_request_is_shown_in_french() -> None:
    view, timeline = _history()
    page = views.referral_page("34", "Hérault", "desk:34", view, timeline, {X: "HAD Lez"},
                               now=REQUESTED_AT + timedelta(minutes=10))
    text = _text(page)
    for label, value in [
        ("Pseudonyme", view["patient"]["pseudonym"]), ("Année de naissance", "1937"), ("Sexe", "Homme"),
        ("Commune de prise en charge", "Montpellier (34172)"), ("Lieu de soins", "EHPAD"), ("EHPAD (FINESS)", "340011113"),
        ("Type d’origine", "EHPAD"), ("Établissement demandeur (FINESS)", "340780477"), ("Service", "Unité Alzheimer"),
        ("Prescripteur (RPPS ou identifiant local)", "10101010101"), ("Arrivée aux urgences", "10/03/2025 10:00"),
        ("MPP principal", "03 — Traitement intraveineux"), ("MPP associés", "09 — "), ("Indice de Karnofsky", "30 %"),
        ("Équipements", "Oxygène, Pompe PCA"), ("Soins palliatifs", "non"), ("Urgence", "Programmée"),
        ("Date programmée", "13/03/2025"), ("Durée prévue", "21 jours"), ("Demandée le", "10/03/2025 15:00"),
        ("Admission souhaitée", "12/03/2025 16:00"), ("Consentement du patient", "oui"),
        ("Accord du médecin traitant", "oui"), ("Aidant présent", "non"),
        ("Avis HAD", "favorable — Avis favorable de l'IDE de liaison"),
        ("Statut", "Proposée"), ("HAD sollicitées", f"HAD Lez ({X}), {Y}"), ("Départements de recherche", "34"),
    ]:
        assert f"{label} {value}" in text, (label, value)
    assert "25 — " in text.split("MPP associés")[1].split("Indice")[0]
    assert "Fin de la réservation de place" in text
    assert "Objectif d’admission (24 h après la demande, ou le jour programmé) : 14/03/2025 00:00" in text, "the end of the planned day"
    assert f'data-until="{view["current_offer"]["hold_until"]}"' in page
    assert "choix du bureau" in text and "Proposé à HAD Y" in text


def test_the_timeline_says_what_each_actor_did() -> None:
    view, timeline = _history()
    page = views.referral_page("34", "Hérault", "desk:34", view, timeline, {X: "HAD Lez"})
    items = [_text(li) for li in re.findall(r"<li class=\"h-[^\"]*\" data-type=.*?</li>", page, re.S)]
    assert len(items) == 4
    assert "Nouvelle demande" in items[0] and "Par : EHPAD (FINESS 340780477)" in items[0]
    assert "Offre proposée" in items[1] and "Par : Réflexe (automatique)" in items[1]
    assert "Offre refusée" in items[2] and "plus de place" in items[2] and "équipe <complète>" in items[2]
    assert f"Par : HAD Lez (HAD, FINESS {X})" in items[2]
    assert "Offre proposée" in items[3] and "par le bureau" in items[3] and "Par : Bureau de coordination (34)" in items[3]
    assert "10/03/2025 15:02" in items[2], "on the department's clock (Paris)"


def test_every_value_is_escaped() -> None:
    view, timeline = _history()
    evil_avis = {"eligible": False, "reason": "OTHER", "text": "<script>alert(1)</script>"}
    view = {**view, "avis": evil_avis, "current_avis": evil_avis,
            "source": {**view["source"], "unit": '"><img src=x onerror=alert(1)>'}}
    page = views.referral_page("34", "Hérault", "desk:34", view, timeline, {X: "<i>HAD</i>"})
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "<i>HAD</i>" not in page and "<b>la plus proche</b>" not in page
    assert "défavorable (autre motif)" in _text(page)


def test_an_unavailable_timeline_is_said_and_the_rest_still_shown() -> None:
    view, _ = _history()
    page = views.referral_page("34", "Hérault", "desk:34", view, None, {})
    assert "Historique : service momentanément indisponible" in page and "Karnofsky" in page


def test_every_event_of_the_lifecycle_has_a_french_title() -> None:
    names = {cls.__name__ for cls in typing.get_args(events.Event)}
    assert names == set(TIMELINE_KINDS)
    for name in names:
        title, text = describe_timeline_event(name, {"referral_id": "0b6f2c1e-0000", "had_finess": X})
        assert title != TIMELINE_KINDS[name] and "0b6f2c1e" in text, name


def test_actors_in_words() -> None:
    assert labels.actor_label("had:340000011", {"340000011": "HAD Lez"}) == "HAD Lez (HAD, FINESS 340000011)"
    assert labels.actor_label("had:340000029", {}) == "HAD (FINESS 340000029)"
    assert labels.actor_label("hospital:340780477", {}) == "Établissement de santé (FINESS 340780477)"
    assert labels.actor_label("desk:34", {}) == "Bureau de coordination (34)"
    assert labels.actor_label("system", {}) == labels.actor_label(None, {}) == "Réflexe (automatique)"


def test_each_queue_row_links_to_its_referral_page() -> None:
    view, _ = _history()
    html = views.queue_html({"referrals": [view]}, None)
    assert f'href="/desk/34/referrals/{view["referral_id"]}"' in html
    assert 'aria-label="Voir toute la demande 0b6f2c1e"' in html
