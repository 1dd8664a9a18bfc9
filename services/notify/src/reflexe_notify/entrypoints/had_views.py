"""The HAD coordinating nurse's page, server-rendered (every value escaped), in French.

Regions the script refreshes from /had/{f}/fragments when the HAD's live stream says something
changed: the offers to decide (each offer an article kept as is while it stays, so a refusal
being typed keeps its focus and text), the patients accepted or in care, the latest declaration,
the history. The capacity form is never re-rendered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from reflexe_common.geography import time_zone_of
from reflexe_common.vocabulary import CapacityStatus, Reason
from reflexe_notify.domain.desk import reason_fr, short
from reflexe_notify.entrypoints.desk_views import (CAPACITY_STATUS_FR, EQUIPMENT_FR, PLACE_FR, SOURCE_FR, STATUS_FR,
                                                   URGENCY_FR, _parse, commune_label, hold_text, mpp_label, unavailable,
                                                   when_fr, yes_no)


def offer_ids(offers: list[dict[str, Any]]) -> list[str]:
    return [o["referral_id"] for o in offers]


def offers_html(offers: list[dict[str, Any]] | None, finess: str, now: datetime | None = None) -> str:
    if offers is None:
        return unavailable("Offres")
    if not offers:
        return '<p id="no-offers">Aucune offre en attente de réponse.</p>'
    now = now or datetime.now(UTC)
    return "".join(offer_html(o, finess, now) for o in offers)


def offer_html(r: dict[str, Any], finess: str, now: datetime) -> str:
    rid = r["referral_id"]
    sid = escape(short(rid))
    offer = r.get("current_offer") or {}
    clinical = r.get("clinical", {})
    conditions = r.get("conditions") or {}
    patient = r.get("patient", {})
    avis = r.get("avis")
    time_zone = time_zone_of(r.get("department"))
    associated = ", ".join(mpp_label(c) for c in clinical.get("associated_mpp", [])) or "aucun"
    equipment = ", ".join(EQUIPMENT_FR.get(e, e) for e in clinical.get("equipment", [])) or "aucun"
    avis_text = ("non donné" if not avis else
                 ("favorable" if avis.get("eligible") else f"défavorable ({reason_fr(avis.get('reason'))})")
                 + (f" — {avis['text']}" if avis.get("text") else ""))
    urgency = URGENCY_FR.get(clinical.get("urgency", ""), clinical.get("urgency", ""))
    planned = clinical.get("planned_date")
    rows = [
        ("MPP principal", mpp_label(clinical.get("main_mpp", ""))),
        ("MPP associés", associated),
        ("Indice de Karnofsky", f"{clinical['karnofsky']} %" if clinical.get("karnofsky") is not None else "—"),
        ("Équipements", equipment),
        ("Soins palliatifs", yes_no(clinical.get("palliative"))),
        ("Urgence", urgency + (f", le {when_fr(planned, time_zone)}" if planned else "")),
        ("Admission souhaitée", when_fr(r.get("desired_admission_at"), time_zone) if r.get("desired_admission_at") else "—"),
        ("Durée prévue", f"{clinical['expected_duration_days']} jours" if clinical.get("expected_duration_days") else "—"),
        ("Demandée le", when_fr(r.get("requested_at"), time_zone)),
        ("Consentement du patient", yes_no(conditions.get("patient_consent"))),
        ("Accord du médecin traitant", yes_no(conditions.get("gp_agreement"))),
        ("Aidant présent", yes_no(conditions.get("caregiver_present"))),
        ("Avis HAD", avis_text),
        ("Commune de prise en charge", commune_label(patient.get("care_commune", ""))),
        ("Lieu de soins", PLACE_FR.get(patient.get("place_of_care", ""), patient.get("place_of_care", ""))),
        ("Origine", SOURCE_FR.get(r.get("source", {}).get("kind", ""), r.get("source", {}).get("kind", ""))),
    ]
    details = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows)
    by_desk = '<p class="muted">Choix du bureau de coordination.</p>' if offer.get("by_desk") else ""
    explanation = offer.get("explanation") or ""
    hold_until = offer.get("hold_until") or ""
    oid = escape(offer.get("offer_id", ""))
    return f"""<article class="offer" id="offer-{escape(rid)}" data-referral="{escape(rid)}" data-offer="{oid}"
 aria-labelledby="offer-h-{escape(rid)}">
  <h3 id="offer-h-{escape(rid)}" tabindex="-1">Demande <code title="{escape(rid)}">{sid}</code> — {escape(urgency)}
    <span class="hold">place réservée : <span class="clock" data-until="{escape(hold_until)}">{escape(hold_text(hold_until, now))}</span></span></h3>
  {by_desk}<p class="explanation">{escape(explanation)}</p>
  <dl class="facts">{details}</dl>
  <div class="answer">
    <form class="had-action" method="post" action="/had/{escape(finess)}/actions/accept">
      <input type="hidden" name="referral_id" value="{escape(rid)}"><input type="hidden" name="offer_id" value="{oid}">
      <button type="submit" class="accept" aria-label="Accepter la demande {sid}">Accepter</button>
    </form>
    <form class="had-action decline" method="post" action="/had/{escape(finess)}/actions/decline">
      <input type="hidden" name="referral_id" value="{escape(rid)}"><input type="hidden" name="offer_id" value="{oid}">
      <fieldset><legend>Refuser la demande {sid}</legend>
        <label for="reason-{escape(rid)}">Motif</label>
        <select id="reason-{escape(rid)}" name="reason" required>{reason_options()}</select>
        <label for="text-{escape(rid)}">Précision (facultatif, sans donnée identifiante)</label>
        <textarea id="text-{escape(rid)}" name="text" rows="2" maxlength="2000"></textarea>
        <button type="submit" class="danger" aria-label="Refuser la demande {sid}">Refuser</button>
      </fieldset>
    </form>
  </div>
</article>"""


def reason_options() -> str:
    return ('<option value="">— choisir un motif —</option>'
            + "".join(f'<option value="{escape(r.value)}">{escape(reason_fr(r.value))}</option>' for r in Reason))


def patients_html(patients: list[dict[str, Any]] | None, finess: str) -> str:
    if patients is None:
        return unavailable("Patients")
    if not patients:
        return "<p>Aucun patient accepté en attente d’admission ni en cours de séjour.</p>"
    rows = []
    for r in patients:
        rid = r["referral_id"]
        sid = escape(short(rid))
        status = r.get("status", "")
        clinical = r.get("clinical", {})
        if status == "ACCEPTED":
            action, label, verb = "admit", "Déclarer l’admission", "admission"
        else:
            action, label, verb = "discharge", "Déclarer la sortie", "sortie"
        rows.append(
            f'<tr id="patient-{escape(rid)}" data-referral="{escape(rid)}" data-status="{escape(status)}">'
            f'<th scope="row"><code title="{escape(rid)}">{sid}</code></th>'
            f'<td><span class="tag tag-{escape(status.lower())}">{escape(STATUS_FR.get(status, status))}</span></td>'
            f'<td>{escape(mpp_label(clinical.get("main_mpp", "")))}</td>'
            f'<td>{escape(commune_label(r.get("patient", {}).get("care_commune", "")))}</td>'
            f'<td><form class="had-action" method="post" action="/had/{escape(finess)}/actions/{action}">'
            f'<input type="hidden" name="referral_id" value="{escape(rid)}">'
            f'<button type="submit" data-referral="{escape(rid)}" aria-label="{escape(label)} — demande {sid}">'
            f'{escape(label)}</button></form><span class="sr-only">{escape(verb)}</span></td></tr>')
    return ('<table class="grid"><thead><tr><th scope="col">Demande</th><th scope="col">Statut</th>'
            '<th scope="col">MPP</th><th scope="col">Commune</th><th scope="col"><span class="sr-only">Action</span></th>'
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def capacity_html(had: dict[str, Any] | None, latest: dict[str, Any] | None, time_zone: ZoneInfo) -> str:
    if had is None:
        return unavailable("Capacité")
    authorised = had.get("authorised_places", "—")
    if latest is None:
        return f'<p>Aucune déclaration enregistrée. Places autorisées : {escape(str(authorised))}.</p>'
    status = latest.get("status", "")
    return (f'<p id="capacity-now"><strong>{escape(str(latest.get("places_available")))}</strong> place(s) déclarée(s) '
            f'sur {escape(str(authorised))} autorisées, <strong>{escape(str(latest.get("admissions_possible_today")))}'
            f'</strong> admission(s) encore possible(s) aujourd’hui, '
            f'<span class="tag tag-{escape(status.lower())}">{escape(CAPACITY_STATUS_FR.get(status, status))}</span>'
            f'<br><span class="muted">Déclarée le {escape(when_fr(latest.get("declared_at"), time_zone))}</span></p>')


def history_html(entries: list[dict[str, Any]], time_zone: ZoneInfo) -> str:
    if not entries:
        return '<p class="muted">Rien pour l’instant.</p>'
    items = []
    for e in entries:
        at = _parse(e.get("occurred_at"))
        when = at.astimezone(time_zone).strftime("%d/%m %H:%M") if at else ""
        items.append(f'<li class="h-{escape(str(e.get("type", "")).replace(".", "-"))}">'
                     f'<time datetime="{escape(e.get("occurred_at", ""))}">{escape(when)}</time> '
                     f'<strong>{escape(e.get("title", ""))}</strong> — {escape(e.get("text", ""))}</li>')
    return '<ol class="history">' + "".join(items) + "</ol>"


def _status_options(current: str | None) -> str:
    return "".join(f'<option value="{s.value}"{" selected" if s.value == current else ""}>'
                   f'{escape(CAPACITY_STATUS_FR[s.value])}</option>' for s in CapacityStatus)


def _layout(title: str, body: str) -> str:
    # The desk's style sheet (shared look, contrast and focus rules), then the HAD page's own.
    return ('<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/had/static/desk.css">'
            '<link rel="stylesheet" href="/had/static/had.css"></head>'
            f'<body>{body}</body></html>')


def login_page(error: str | None = None, next_path: str = "") -> str:
    problem = f'<p class="problem" role="alert" id="login-error">{escape(error)}</p>' if error else ""
    target = "/had/login" + (f"?next={quote(next_path, safe='/')}" if next_path else "")
    return _layout("Réflexe — connexion de l’HAD", (
        '<main class="login"><h1>Réflexe — hospitalisation à domicile</h1>'
        f"{problem}"
        '<p class="muted">Infirmière ou infirmier de coordination : connectez-vous avec le compte de votre HAD, sur la '
        "page du service d’identification. Vos jetons restent sur le serveur.</p>"
        f'<p><a class="button" id="login" href="{escape(target)}">Se connecter</a></p></main>'))


def forbidden_page(message: str) -> str:
    return _layout("Réflexe — accès refusé", (
        f'<main class="login"><h1>Accès refusé</h1><p class="problem" role="alert">{escape(message)}</p>'
        '<form method="post" action="/had/logout"><button type="submit">Se connecter avec un autre compte</button></form>'
        '</main>'))


def had_page(finess: str, name: str, actor: str, offers: list[dict[str, Any]] | None,
             patients: list[dict[str, Any]] | None, had: dict[str, Any] | None, latest: dict[str, Any] | None,
             history: list[dict[str, Any]], head: int, department: str | None) -> str:
    time_zone = time_zone_of(department)
    config = json.dumps({"finess": finess, "head": head, "offers": offer_ids(offers or [])})
    body = f"""
<a class="skip" href="#offers-h">Aller aux offres à décider</a>
<header class="top">
  <h1>HAD — {escape(name)} <span class="muted">(FINESS {escape(finess)})</span></h1>
  <p class="live" id="live-indicator"><span aria-hidden="true">●</span> <span id="live-text">Connexion au direct…</span></p>
  <form method="post" action="/had/logout"><button type="submit" class="secondary">Se déconnecter</button></form>
</header>
<div id="stream-banner" class="banner" role="alert" hidden>Direct interrompu : reconnexion en cours… Les informations affichées peuvent être en retard.</div>
<p id="offer-announce" class="sr-only" role="status" aria-live="assertive" aria-atomic="true"></p>
<main id="had" data-config='{escape(config)}'>
  <div class="col">
    <section aria-labelledby="offers-h">
      <h2 id="offers-h" tabindex="-1">Offres à décider</h2>
      <p id="action-result" role="status" aria-live="polite"></p>
      <div id="offers">{offers_html(offers, finess)}</div>
    </section>
    <section aria-labelledby="patients-h">
      <h2 id="patients-h" tabindex="-1">Patients acceptés et en cours de séjour</h2>
      <div id="patients">{patients_html(patients, finess)}</div>
    </section>
  </div>
  <div class="col">
    <section aria-labelledby="capacity-h" class="actions">
      <h2 id="capacity-h">Capacité</h2>
      <div id="capacity">{capacity_html(had, latest, time_zone)}</div>
      <form id="capacity-form" method="post" action="/had/{escape(finess)}/capacity">
        <fieldset><legend>Déclarer la capacité</legend>
          <label for="places">Places disponibles</label>
          <input id="places" name="places_available" type="number" min="0" max="5000" required inputmode="numeric"
                 value="{escape(str((latest or {}).get('places_available', '')))}">
          <label for="admissions">Admissions encore possibles aujourd’hui</label>
          <input id="admissions" name="admissions_possible_today" type="number" min="0" max="5000" required
                 inputmode="numeric" value="{escape(str((latest or {}).get('admissions_possible_today', '')))}">
          <label for="capacity-status">Statut</label>
          <select id="capacity-status" name="status" required>{_status_options((latest or {}).get('status'))}</select>
          <button type="submit">Déclarer</button>
        </fieldset>
      </form>
      <p id="capacity-result" role="status" aria-live="polite"></p>
    </section>
    <section aria-labelledby="history-h">
      <h2 id="history-h">Historique récent <span class="muted">(le plus récent en premier)</span></h2>
      <div id="history">{history_html(history, time_zone)}</div>
    </section>
  </div>
</main>
<p class="muted foot">Connecté en tant que {escape(actor)}. Mise à jour en direct, sans rechargement.</p>
<noscript><p class="problem">Sans JavaScript, rechargez la page pour la mettre à jour.</p></noscript>
<script src="/had/static/had.js" defer></script>"""
    return _layout(f"Réflexe — HAD {finess}", body)
