"""The desk's side of notify, without I/O: which events reach the desks' live stream and
alerts, the French wording, the e-mail and the page's HTML (escaped, accessible)."""

from __future__ import annotations

import email
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from html import unescape

import pytest
from reflexe.v1 import capacity_pb2, matching_pb2, referral_pb2

from reflexe_common.envelope import ts, wrap
from reflexe_common.geography import is_department_code, normalise_department_code
from reflexe_notify.adapters.events import desk_event_from, notice_from, other_desks_named
from reflexe_notify.domain.desk import ALERTS, DeskEvent, describe, desks_told
from reflexe_notify.domain.email import compose
from reflexe_notify.domain.routing import EventKind as K
from reflexe_notify.domain.routing import recipients_for
from reflexe_notify.entrypoints.pages import labels, views
from reflexe_notify.entrypoints.pages.actions import widened_departments
from tests.support.data import pseudonym

AT = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
RID = "0b8f5c3e-8d5e-4a53-9d1e-6f0a4c2b9e11"


def header() -> referral_pb2.ReferralEventHeader:
    return referral_pb2.ReferralEventHeader(referral_id=RID, department="34", occurred_at=ts(AT), actor="system")


# ---------------------------------------------------------------- escalations when a clock runs out

ESCALATIONS = [
    (referral_pb2.OfferUnanswered(header=header(), offer_id="o1", had_finess="340011295"), K.OFFER_UNANSWERED),
    (referral_pb2.AdmissionOverdue(header=header()), K.ADMISSION_OVERDUE),
    (referral_pb2.ReferralEscalated(header=header(), why="aucune HAD ne couvre la commune"), K.REFERRAL_ESCALATED),
    (matching_pb2.MatchExhausted(referral_id=RID, department="34", occurred_at=ts(AT), explanation="HAD saturée",
                                 by_desk=True), K.REFERRAL_ESCALATED),
]


@pytest.mark.parametrize(("message", "kind"), ESCALATIONS, ids=lambda v: type(v).__name__ if not isinstance(v, K) else "")
def test_every_clock_and_no_had_found_tells_the_desk_by_webhook_email_and_alert(message, kind) -> None:
    envelope = wrap(message, "tests")
    notice = notice_from(envelope)
    assert notice is not None and notice.kind == kind
    assert "desk:34" in {str(r) for r in recipients_for(notice.kind, notice.department, notice.had_finess)}
    entry = desk_event_from(envelope)
    assert entry is not None and entry.department == "34" and entry.alert


def test_a_match_exhausted_without_the_desk_is_escalated_by_the_referral_service_not_here() -> None:
    message = matching_pb2.MatchExhausted(referral_id=RID, department="34", occurred_at=ts(AT), by_desk=False)
    assert notice_from(wrap(message, "tests")) is None
    assert desk_event_from(wrap(message, "tests")) is None


def test_the_stream_follows_the_referral_services_offer_not_the_matchers() -> None:
    proposed = matching_pb2.OfferProposed(referral_id=RID, department="34", occurred_at=ts(AT), offer_id="o1",
                                          had_finess="340011295", hold_until=ts(AT + timedelta(minutes=30)))
    assert desk_event_from(wrap(proposed, "tests")) is None
    made = referral_pb2.OfferMade(header=header(), offer_id="o1", had_finess="340011295",
                                  hold_until=ts(AT + timedelta(minutes=30)), explanation="la plus proche")
    entry = desk_event_from(wrap(made, "tests"))
    assert entry.kind == "offer.proposed" and entry.data["explanation"] == "la plus proche" and not entry.alert


@pytest.mark.parametrize("message", [
    referral_pb2.SearchWidened(header=header(), departments=["30", "12"]),
    referral_pb2.DeskOfferRequested(header=header(), had_finess="340011295"),
    referral_pb2.OfferWithdrawn(header=header(), offer_id="o1", had_finess="340011295", why="déjà acceptée"),
    referral_pb2.PatientDischarged(header=header(), had_finess="340011295"),
    referral_pb2.ReferralDeclaredIneligible(header=header(), reason="MEDICAL_NOT_ELIGIBLE"),
    referral_pb2.OfferAccepted(header=header(), offer_id="o1", had_finess="340011295"),
    referral_pb2.ReferralCancelled(header=header(), reason="PATIENT_REFUSED"),
    referral_pb2.ReferralCompleted(header=header()),
], ids=lambda m: type(m).__name__)
def test_every_change_of_the_queue_reaches_the_stream(message) -> None:
    entry = desk_event_from(wrap(message, "tests"))
    assert entry is not None and entry.department == "34" and entry.data["referral_id"] == RID


def test_capacity_changes_reach_the_stream_of_the_hads_department() -> None:
    changed = capacity_pb2.LivePlacesChanged(had_finess="340011295", department="34", occurred_at=ts(AT),
                                             live_places=2, declared_places=3, status="OPEN", authorised_places=40)
    entry = desk_event_from(wrap(changed, "tests"))
    assert entry.kind == "capacity.changed" and entry.data["live_places"] == 2 and not entry.alert
    declared = capacity_pb2.CapacityDeclared(had_finess="340011295", department="34", places_available=5,
                                             status="SATURATED", declared_at=ts(AT))
    assert desk_event_from(wrap(declared, "tests")).data["declared_places"] == 5


def test_a_multi_department_hads_capacity_names_every_desk_it_serves() -> None:
    changed = capacity_pb2.LivePlacesChanged(had_finess="310781406", department="31", occurred_at=ts(AT),
                                             live_places=2, departments=["31", "81"])
    envelope = wrap(changed, "tests")
    entry = desk_event_from(envelope)
    assert desks_told(entry.department, other_desks_named(envelope)) == ["31", "81"]
    one_department = wrap(capacity_pb2.CapacityDeclared(had_finess="340011295", department="34", declared_at=ts(AT),
                                                        departments=["34"]), "tests")
    assert desks_told("34", other_desks_named(one_department)) == ["34"]


def test_a_widened_referral_alerts_the_neighbouring_desk_only() -> None:
    envelope = wrap(referral_pb2.SearchWidened(header=header(), departments=["30", "12"]), "tests")
    entry = desk_event_from(envelope)
    assert desks_told(entry.department, other_desks_named(envelope)) == ["34", "30", "12"]
    assert not entry.alert  # the widening desk's own act
    neighbour = replace(entry, department="30")
    assert neighbour.alert and neighbour.widened_here
    payload = neighbour.payload(7)
    assert payload["department"] == "30" and payload["data"]["department"] == "34" and payload["alert"]
    assert payload["title"] == "Demande d'un département voisin" and "du département 34" in payload["text"]
    # Later events of the referral on the neighbour's stream are what they are, not a widening.
    accepted = replace(desk_event_from(wrap(referral_pb2.OfferAccepted(header=header(), offer_id="o1",
                                                                       had_finess="300000000"), "tests")), department="30")
    assert not accepted.alert and not accepted.widened_here


def test_events_that_name_no_other_desk() -> None:
    for message in (referral_pb2.OfferAccepted(header=header(), offer_id="o1", had_finess="340011295"),
                    referral_pb2.ReferralCancelled(header=header(), reason="PATIENT_REFUSED")):
        assert other_desks_named(wrap(message, "tests")) == ()
    assert desks_told("34", [], ["34", ""]) == ["34"]


def test_the_stream_never_carries_the_patient_block() -> None:
    requested = referral_pb2.ReferralRequested(header=header(), request=referral_pb2.ReferralRequest(
        referral_id=RID, department="34", source=referral_pb2.Source(kind="ED", finess="340780477"),
        patient=referral_pb2.Patient(pseudonym=pseudonym("pseudo-secret"), birth_year=1938, care_commune="34172"),
        clinical=referral_pb2.Clinical(main_mpp="04", urgency="WITHIN_24H")))
    payload = json.dumps(desk_event_from(wrap(requested, "tests")).payload(1))
    assert pseudonym("pseudo-secret") not in payload and "1938" not in payload and "34172" not in payload


def test_alert_kinds_and_french_wording() -> None:
    assert {"offer.unanswered", "admission.overdue", "referral.escalated", "delivery.failed"} <= ALERTS
    assert "offer.proposed" not in ALERTS and "referral.requested" not in ALERTS
    title, text = describe("offer.unanswered", {"referral_id": RID, "had_finess": "340011295"})
    assert title == "Offre sans réponse" and "0b8f5c3e" in text and "340011295" in text
    title, text = describe("offer.declined", {"referral_id": RID, "had_finess": "340011295", "reason": "NO_CAPACITY"})
    assert "plus de place" in text
    entry = DeskEvent("34", "e1", "admission.overdue", AT, {"referral_id": RID})
    assert entry.payload(7) | {} == {"seq": 7, "type": "admission.overdue", "department": "34",
                                     "occurred_at": AT.isoformat(), "alert": True, "title": "Admission en retard",
                                     "text": entry.payload(7)["text"], "data": {"referral_id": RID}}


# ---------------------------------------------------------------- e-mail


def test_the_email_is_french_multipart_and_identifies_its_delivery() -> None:
    body = json.dumps({"type": "referral.escalated", "timestamp": AT.isoformat(),
                       "data": {"referral_id": RID, "department": "34", "why": "aucune HAD <b>disponible</b>"}})
    message = compose(body, "msg_abc", "Réflexe <ne-pas-repondre@reflexe.invalid>", "bureau34@mssante.fr",
                      "https://reflexe.example/desk/34")
    parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
    assert parsed["Subject"] == "[Réflexe] Aucune HAD trouvée — département 34"
    assert parsed["Message-ID"] == "<msg_abc@reflexe.notify>" and parsed["To"] == "bureau34@mssante.fr"
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert "Demande 0b8f5c3e : aucune HAD trouvée" in text and "https://reflexe.example/desk/34" in text
    assert '<html lang="fr">' in html and "&lt;b&gt;disponible&lt;/b&gt;" in html and "<b>disponible" not in html


# ---------------------------------------------------------------- the page's HTML

BOARD = {"department": "34", "stale_after_seconds": 43200, "hads": [
    {"finess": "340011295", "name": "HAD <Montpellier>", "authorised_places": 40, "declared_places": 3, "live_places": 2,
     "status": "OPEN", "declaration_age_seconds": 600, "stale": False, "active_patients": 57},
    {"finess": "340222223", "name": "HAD Sète", "authorised_places": 20, "declared_places": 1, "live_places": 1,
     "status": "SATURATED", "declaration_age_seconds": 90000, "stale": True},
]}
QUEUE = {"department": "34", "referrals": [{
    "referral_id": RID, "status": "OFFERED", "source": {"kind": "ED"}, "clinical": {"main_mpp": "04", "urgency": "WITHIN_24H"},
    "requested_at": AT.isoformat(), "waiting_seconds": 3900,
    "current_offer": {"offer_id": "o1", "had_finess": "340011295", "hold_until": (AT + timedelta(minutes=20)).isoformat(),
                      "explanation": "la plus proche <script>", "by_desk": False},
}]}


def test_the_board_marks_stale_declarations_in_words_not_only_colour() -> None:
    html = views.board_html(BOARD)
    assert "HAD &lt;Montpellier&gt;" in html and "<Montpellier>" not in html
    stale_row = html[html.index('data-finess="340222223"'):]
    assert "Périmée" in stale_row.split("</tr>")[0] and "Saturée" in stale_row.split("</tr>")[0]
    assert "Périmée" not in html[html.index('data-finess="340011295"'):].split("</tr>")[0]
    assert views.board_html(None).startswith('<p class="problem" role="alert">')


def test_the_board_shows_each_hads_census_or_a_dash_when_it_declared_none() -> None:
    html = views.board_html(BOARD)
    assert "Patients en cours" in html
    declared = html[html.index('data-finess="340011295"'):].split("</tr>")[0]
    assert '<td class="num">57</td>' in declared
    undeclared = html[html.index('data-finess="340222223"'):].split("</tr>")[0]
    assert '<td class="num">—</td>' in undeclared


def test_the_queue_shows_clocks_offer_and_explanation() -> None:
    html = views.queue_html(QUEUE, BOARD, now=AT + timedelta(minutes=5))
    assert f'data-since="{AT.isoformat()}"' in html and "1 h 05 min" in html
    assert "expire dans 15 min" in html and "HAD &lt;Montpellier&gt;" in html
    assert "la plus proche &lt;script&gt;" in html and "Proposée" in html


def test_the_page_is_french_labelled_and_announces_alerts() -> None:
    alert = {"seq": 3, "type": "offer.unanswered", "occurred_at": AT.isoformat(), "title": "Offre sans réponse",
             "text": "<img src=x onerror=alert(1)>"}
    page = views.desk_page("34", "Hérault", "desk:34", BOARD, QUEUE, [alert], 3, ["30", "12"])
    assert page.startswith('<!doctype html><html lang="fr">')
    assert 'aria-live="polite"' in page and 'id="stream-banner"' in page
    assert "&lt;img src=x" in page and "<img src=x" not in page
    for control in ("referral-select", "had-select", "widen-departments", "close-reason", "close-text"):
        assert f'<label for="{control}">' in page
    config = json.loads(unescape(re.search(r'<main id="desk" data-config="([^"]*)"', page).group(1)))
    assert config == {"department": "34", "head": 3, "timeZone": "Europe/Paris"}, "the script resumes the stream at 3"


@pytest.mark.parametrize(("seconds", "text"), [(5, "5 s"), (125, "2 min"), (3900, "1 h 05 min"), (90000, "1 j 1 h")])
def test_durations(seconds: int, text: str) -> None:
    assert labels.duration_fr(seconds) == text


def test_an_overdue_planned_admission_tells_the_desk_its_planned_date_not_24_hours() -> None:
    due = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
    planned = referral_pb2.AdmissionOverdue(header=header(), due_at=ts(due), planned_date="2026-11-24")
    notice = notice_from(wrap(planned, "tests"))
    assert notice is not None and notice.data["due_at"] == due.isoformat() and notice.data["planned_date"] == "2026-11-24"
    entry = desk_event_from(wrap(planned, "tests")).payload(1)
    assert entry["title"] == "Admission en retard" and entry["alert"]
    assert "date prévue (24/11/2026)" in entry["text"] and "24 h" not in entry["text"]
    urgent = desk_event_from(wrap(referral_pb2.AdmissionOverdue(header=header(), due_at=ts(due)), "tests")).payload(1)
    assert urgent["data"]["planned_date"] is None and "sous 24 h après la demande" in urgent["text"]


def test_an_incomplete_referral_is_named_on_its_queue_row_with_what_it_lacks() -> None:
    waiting = {"referral_id": RID, "status": "INCOMPLETE", "missing_conditions": ["patient_consent", "gp_agreement"],
               "clinical": {"urgency": "WITHIN_24H", "main_mpp": "04"}, "requested_at": AT.isoformat(),
               "waiting_seconds": 600, "source": {"kind": "ED"}, "current_offer": None}
    row = views.queue_html({"referrals": [waiting]}, BOARD, now=AT).split("</tr>")[1]
    assert 'data-status="INCOMPLETE"' in row and "Incomplète" in row
    assert "Manque : consentement du patient, accord du médecin traitant" in row
    searching = views.queue_html({"referrals": [{**waiting, "status": "REQUESTED", "missing_conditions": []}]}, BOARD,
                                 now=AT)
    assert "Manque" not in searching
    completed = desk_event_from(wrap(referral_pb2.ReferralCompleted(header=header()), "tests")).payload(1)
    assert completed["type"] == "referral.completed" and not completed["alert"]
    assert completed["title"] == "Demande complétée"


def test_the_timeline_says_which_condition_an_update_gave_and_what_is_still_missing() -> None:
    from reflexe_notify.domain.desk import describe_timeline_event

    title, text = describe_timeline_event("ReferralRequestUpdated", {
        "referral_id": RID, "changed_fields": ["conditions.patient_consent"], "missing_conditions": ["gp_agreement"]})
    assert title == "Demande mise à jour"
    assert "(consentement du patient)" in text and "manque encore : accord du médecin traitant" in text


def test_a_desk_widens_a_search_to_departments_typed_in_any_case() -> None:
    typed = " 30, 2a;2B ,, 12 "
    assert widened_departments(typed) == ["30", "2A", "2B", "12"]
    assert all(is_department_code(code) for code in widened_departments(typed))
    assert normalise_department_code(" 2b ") == "2B" and normalise_department_code("974") == "974"


def test_a_referral_widened_from_a_neighbouring_department_is_read_only_on_this_desk() -> None:
    widened = {"referral_id": RID, "department": "30", "status": "REQUESTED", "missing_conditions": [],
               "clinical": {"urgency": "WITHIN_24H", "main_mpp": "04"}, "requested_at": AT.isoformat(),
               "waiting_seconds": 600, "source": {"kind": "ED"}, "current_offer": None}
    own = {**widened, "referral_id": "00000000-0000-4000-8000-0000000000aa", "department": "34"}
    fragments = views.desk_fragments({"referrals": [widened, own]}, BOARD, "34")
    widened_row, own_row = fragments["queue"].split("</tr>")[1:3]
    # Opened on this desk's own page (the referral service lets a desk it was widened to read it).
    assert f'href="/desk/34/referrals/{RID}"' in widened_row
    assert 'class="pick"' not in widened_row and "Département 30" in widened_row
    assert 'class="pick"' in own_row
    # Only its own desk acts on it: not offered among the referrals to act on.
    assert RID not in fragments["referral_options"] and own["referral_id"] in fragments["referral_options"]
