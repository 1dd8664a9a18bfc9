"""The desk page's HTML, server-rendered (every value escaped), in French, and the French labels
of what the desk and HAD pages show (statuses, urgencies, equipment, actors...), kept here only.

The page is three regions the script refreshes from /desk/{d}/fragments when the live stream
says they changed (queue, board), one it feeds from the stream itself (alerts), and the desk
actions, which are never re-rendered so that a form being filled in keeps its focus and input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, StrictUndefined

from reflexe_common.geography import Geography, time_zone_of
from reflexe_common.vocabulary import MPP_LABELS, Reason
from reflexe_notify.domain.desk import TIMELINE_KINDS, describe_timeline_event, reason_fr, short

STATUS_FR = {
    "INCOMPLETE": "Incomplète — en attente", "REQUESTED": "En recherche", "OFFERED": "Proposée", "ACCEPTED": "Acceptée", "ESCALATED": "Sans HAD — à traiter",
    "ADMITTED": "Admis", "INELIGIBLE": "Non éligible", "CANCELLED": "Clôturée", "DISCHARGED": "Sortie",
}
BOARD_STATUS_FR = {"OPEN": "Ouverte", "SATURATED": "Saturée", "CLOSED": "Fermée", "UNDECLARED": "Non déclarée"}
URGENCY_FR = {"WITHIN_24H": "Sous 24 h", "PLANNED": "Programmée"}
# What keeps an INCOMPLETE referral from being offered, named on its queue row.
MISSING_FR = {"patient_consent": "consentement du patient", "gp_agreement": "accord du médecin traitant"}
SOURCE_FR = {"ED": "Urgences", "UHCD": "UHCD", "WARD": "Service", "EHPAD": "EHPAD", "GP": "Médecin traitant"}
EQUIPMENT_FR = {
    "PCA_PUMP": "Pompe PCA", "SYRINGE_DRIVER": "Pousse-seringue électrique", "MEOPA": "MEOPA", "OXYGEN": "Oxygène",
    "PARENTERAL_NUTRITION": "Nutrition parentérale", "TRANSFUSION": "Transfusion", "ISOLATION": "Isolement",
}
CAPACITY_STATUS_FR = {"OPEN": "Ouverte", "SATURATED": "Saturée", "CLOSED": "Fermée"}
PLACE_FR = {"HOME": "Domicile", "EHPAD": "EHPAD"}
SEX_FR = {"F": "Femme", "M": "Homme", "U": "Non précisé"}
CLOCK_FR = {"HOLD_EXPIRY": "Fin de la réservation de place", "OFFER_UNANSWERED": "Relance de l’HAD sans réponse",
            "ADMISSION_OVERDUE": "Objectif d’admission (24 h après la demande, ou le jour programmé)"}
# Who acted on a referral, from the actor of its events ("kind:id").
ACTOR_FR = {"hospital": "Établissement de santé", "ehpad": "EHPAD", "gp": "Médecin traitant", "had": "HAD",
            "desk": "Bureau de coordination", "system": "Réflexe (automatique)"}


def mpp_label(code: str) -> str:
    label = MPP_LABELS.get(code)
    return f"{code} — {label}" if label else code


def yes_no(value: Any) -> str:
    return "non renseigné" if value is None else ("oui" if value else "non")


def when_fr(value: str | None, time_zone: ZoneInfo, with_time: bool = True) -> str:
    """A time on the department's own clock; a date alone as a date."""
    at = _parse(value)
    if at is None:
        return value or "—"
    if at.tzinfo is None:  # a date alone
        return at.strftime("%d/%m/%Y")
    return at.astimezone(time_zone).strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")


def commune_label(code: str) -> str:
    found = Geography.load().commune(code)
    return f"{found.name} ({code})" if found else code


def actor_label(actor: str | None, had_names: dict[str, str]) -> str:
    """'HAD Avène (HAD, FINESS 340000011)', 'EHPAD (FINESS 340011113)', 'Bureau de coordination (34)'."""
    kind, _, who = (actor or "system").partition(":")
    label = ACTOR_FR.get(kind, kind)
    if not who:
        return label
    if kind == "desk":
        return f"{label} ({who})"
    name = had_names.get(who) if kind == "had" else None
    return f"{name} ({label}, FINESS {who})" if name else f"{label} (FINESS {who})"


def duration_fr(seconds: float) -> str:
    """'45 s', '12 min', '3 h 05 min', '2 j 4 h' (the script renders the same while clocks run)."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} j {s % 86400 // 3600} h"


def _parse(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def hold_text(hold_until: str | None, now: datetime) -> str:
    until = _parse(hold_until)
    if until is None:
        return "—"
    left = (until - now).total_seconds()
    return f"expire dans {duration_fr(left)}" if left > 0 else "expirée"


def unavailable(what: str) -> str:
    return f'<p class="problem" role="alert">{escape(what)} : service momentanément indisponible. Nouvel essai automatique.</p>'


def board_html(board: dict[str, Any] | None) -> str:
    if board is None:
        return unavailable("Capacités des HAD")
    hads = board.get("hads", [])
    if not hads:
        return "<p>Aucune HAD enregistrée pour ce département.</p>"
    rows = []
    for h in sorted(hads, key=lambda h: (h.get("stale", False), h.get("name") or "")):
        stale = bool(h.get("stale"))
        age = h.get("declaration_age_seconds")
        freshness = "jamais déclarée" if age is None else f"il y a {duration_fr(age)}"
        mark = '<span class="tag tag-stale">Périmée</span> ' if stale else ""
        live = h.get("live_places")
        places = "—" if live is None else str(live)
        status = h.get("status") or "UNDECLARED"
        rows.append(
            f'<tr data-finess="{escape(h["finess"])}" data-name="{escape(h.get("name") or "")}"'
            f'{" class=stale" if stale else ""}>'
            f'<th scope="row">{escape(h.get("name") or "")}<br><span class="muted">{escape(h["finess"])}</span></th>'
            f'<td class="num"><strong>{escape(places)}</strong></td>'
            f'<td class="num">{escape(str(h.get("declared_places") if h.get("declared_places") is not None else "—"))}'
            f' / {escape(str(h.get("authorised_places", "—")))}</td>'
            f'<td><span class="tag tag-{escape(status.lower())}">{escape(BOARD_STATUS_FR.get(status, status))}</span></td>'
            f'<td>{mark}{escape(freshness)}</td></tr>'
        )
    stale_after = board.get("stale_after_seconds")
    caption = ("Une déclaration est périmée au-delà de " + duration_fr(stale_after) + ".") if stale_after else ""
    return ('<table class="grid"><caption class="muted">' + escape(caption) + "</caption>"
            '<thead><tr><th scope="col">HAD</th><th scope="col" class="num">Places libres</th>'
            '<th scope="col" class="num">Déclarées / autorisées</th><th scope="col">Statut</th>'
            '<th scope="col">Dernière déclaration</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def queue_html(queue: dict[str, Any] | None, board: dict[str, Any] | None, now: datetime | None = None) -> str:
    if queue is None:
        return unavailable("File des demandes")
    now = now or datetime.now(UTC)
    names = {h["finess"]: h.get("name") or h["finess"] for h in (board or {}).get("hads", [])}
    referrals = queue.get("referrals", [])
    if not referrals:
        return "<p>Aucune demande ouverte.</p>"
    rows = []
    for r in referrals:
        rid = r["referral_id"]
        status = r.get("status", "")
        clinical = r.get("clinical", {})
        offer = r.get("current_offer")
        waiting = r.get("waiting_seconds", 0)
        if offer:
            had = offer.get("had_finess", "")
            by_desk = " (choix du bureau)" if offer.get("by_desk") else ""
            offer_cell = (f'<strong>{escape(names.get(had, had))}</strong>{escape(by_desk)}'
                          f'<br><span class="muted">{escape(had)}</span>'
                          f'<p class="explanation">{escape(offer.get("explanation") or "")}</p>')
            hold = (f'<span class="clock" data-until="{escape(offer.get("hold_until") or "")}">'
                    f'{escape(hold_text(offer.get("hold_until"), now))}</span>')
        else:
            offer_cell, hold = '<span class="muted">Aucune</span>', "—"
        missing = [MISSING_FR.get(m, m) for m in r.get("missing_conditions") or []]
        missing_note = f'<br><span class="missing">Manque : {escape(", ".join(missing))}</span>' if missing else ""
        rows.append(
            f'<tr id="ref-{escape(rid)}" data-referral="{escape(rid)}" data-status="{escape(status)}">'
            f'<th scope="row"><a class="detail" href="/desk/{quote(r.get("department", ""), safe="")}/referrals/'
            f'{quote(rid, safe="")}" data-referral="{escape(rid)}" aria-label="Voir toute la demande {escape(short(rid))}">'
            f'<code title="{escape(rid)}">{escape(short(rid))}</code></a><br>'
            f'<span class="muted">{escape(SOURCE_FR.get(r.get("source", {}).get("kind", ""), ""))}</span></th>'
            f'<td><span class="tag tag-{escape(status.lower())}">{escape(STATUS_FR.get(status, status))}</span>{missing_note}</td>'
            f'<td>{escape(URGENCY_FR.get(clinical.get("urgency", ""), clinical.get("urgency", "")))}'
            f'<br><span class="muted">MPP {escape(clinical.get("main_mpp", ""))}</span></td>'
            f'<td><span class="clock" data-since="{escape(r.get("requested_at", ""))}">{escape(duration_fr(waiting))}</span></td>'
            f"<td>{offer_cell}</td><td>{hold}</td>"
            f'<td><button type="button" class="pick" data-referral="{escape(rid)}" '
            f'aria-label="Sélectionner la demande {escape(short(rid))}">Sélectionner</button></td></tr>'
        )
    return ('<table class="grid"><thead><tr><th scope="col">Demande</th><th scope="col">Statut</th>'
            '<th scope="col">Urgence</th><th scope="col">Attente</th><th scope="col">Offre en cours et explication</th>'
            '<th scope="col">Réservation</th><th scope="col"><span class="sr-only">Action</span></th></tr></thead>'
            "<tbody>" + "".join(rows) + "</tbody></table>")


def alert_item(alert: dict[str, Any], time_zone: ZoneInfo) -> str:
    """An alert, timed on the department's own clock (Paris, or the overseas department's)."""
    at = _parse(alert.get("occurred_at"))
    when = at.astimezone(time_zone).strftime("%d/%m %H:%M:%S") if at else ""
    return (f'<li data-seq="{int(alert.get("seq", 0))}" class="alert alert-{escape(str(alert.get("type", "")).replace(".", "-"))}">'
            f'<time datetime="{escape(alert.get("occurred_at", ""))}">{escape(when)}</time> '
            f'<strong>{escape(alert.get("title", ""))}</strong> — {escape(alert.get("text", ""))}</li>')


def alerts_html(alerts: list[dict[str, Any]], time_zone: ZoneInfo) -> str:
    return "".join(alert_item(a, time_zone) for a in alerts)


def _referral_options(queue: dict[str, Any] | None) -> str:
    options = ['<option value="">— choisir une demande —</option>']
    for r in (queue or {}).get("referrals", []):
        options.append(f'<option value="{escape(r["referral_id"])}">{escape(short(r["referral_id"]))} — '
                       f'{escape(STATUS_FR.get(r.get("status", ""), r.get("status", "")))}</option>')
    return "".join(options)


def _had_options(board: dict[str, Any] | None) -> str:
    options = ['<option value="">— choisir une HAD —</option>']
    for h in (board or {}).get("hads", []):
        options.append(f'<option value="{escape(h["finess"])}">{escape(h.get("name") or "")} ({escape(h["finess"])})</option>')
    return "".join(options)


def _reason_options() -> str:
    return "".join(f'<option value="{escape(r.value)}">{escape(reason_fr(r.value))}</option>' for r in Reason)


def _layout(title: str, body: str, head_extra: str = "") -> str:
    return ('<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{escape(title)}</title><link rel="stylesheet" href="/desk/static/desk.css">{head_extra}</head>'
            f'<body>{body}</body></html>')


def login_page(error: str | None = None, next_path: str = "") -> str:
    problem = f'<p class="problem" role="alert" id="login-error">{escape(error)}</p>' if error else ""
    target = "/desk/login" + (f"?next={quote(next_path, safe='/')}" if next_path else "")
    return _layout("Réflexe — connexion du bureau de coordination", (
        '<main class="login"><h1>Réflexe — bureau de coordination</h1>'
        f"{problem}"
        '<p class="muted">Connectez-vous avec le compte de votre bureau, sur la page du service d’identification '
        "de la région. Vos jetons restent sur le serveur.</p>"
        f'<p><a class="button" id="login" href="{escape(target)}">Se connecter</a></p></main>'))


def forbidden_page(message: str) -> str:
    return _layout("Réflexe — accès refusé", (
        f'<main class="login"><h1>Accès refusé</h1><p class="problem" role="alert">{escape(message)}</p>'
        '<form method="post" action="/desk/logout"><button type="submit">Se connecter avec un autre compte</button></form>'
        '</main>'))


def unavailable_page(department: str, title: str, message: str) -> str:
    """A referral page that cannot be shown (unknown here, or its service down): say why, and the way back."""
    return _layout(f"Réflexe — {title.lower()}", (
        f'<main class="login"><h1>{escape(title)}</h1><p class="problem" role="alert">{escape(message)}</p>'
        f'<p><a href="/desk/{escape(department)}">Retour à la file des demandes</a></p></main>'))


def desk_page(department: str, department_name: str, actor: str, board: dict[str, Any] | None,
              queue: dict[str, Any] | None, alerts: list[dict[str, Any]], head: int, neighbours: list[str],
              flash: str | None = None) -> str:
    time_zone = time_zone_of(department)
    config = json.dumps({"department": department, "head": head, "timeZone": time_zone.key})
    flash_html = escape(flash or "")
    body = f"""
<a class="skip" href="#queue-h">Aller à la file des demandes</a>
<header class="top">
  <h1>Bureau de coordination HAD — {escape(department_name)} ({escape(department)})</h1>
  <p class="live" id="live-indicator"><span aria-hidden="true">●</span> <span id="live-text">Connexion au direct…</span></p>
  <form method="post" action="/desk/logout"><button type="submit" class="secondary">Se déconnecter</button></form>
</header>
<div id="stream-banner" class="banner" role="alert" hidden>Direct interrompu : reconnexion en cours… Les informations affichées peuvent être en retard.</div>
<main id="desk" data-config='{escape(config)}'>
  <div class="col">
    <section aria-labelledby="queue-h">
      <h2 id="queue-h" tabindex="-1">File des demandes ouvertes</h2>
      <div id="queue">{queue_html(queue, board)}</div>
    </section>
    <section aria-labelledby="actions-h" class="actions">
      <h2 id="actions-h">Actions du bureau</h2>
      <p id="action-result" role="status" aria-live="polite">{flash_html}</p>
      <div class="field">
        <label for="referral-select">Demande concernée</label>
        <select id="referral-select" name="referral_id" form="offer-form" required>{_referral_options(queue)}</select>
      </div>
      <form id="offer-form" class="desk-action" method="post" action="/desk/{escape(department)}/actions/offer">
        <fieldset><legend>Proposer à une HAD choisie</legend>
          <label for="had-select">HAD</label>
          <select id="had-select" name="had_finess" required>{_had_options(board)}</select>
          <button type="submit">Proposer</button>
        </fieldset>
      </form>
      <form id="widen-form" class="desk-action" method="post" action="/desk/{escape(department)}/actions/widen">
        <input type="hidden" name="referral_id">
        <fieldset><legend>Élargir la recherche</legend>
          <label for="widen-departments">Départements voisins (séparés par des virgules)</label>
          <input id="widen-departments" name="departments" required value="{escape(', '.join(neighbours))}"
                 aria-describedby="widen-help" autocomplete="off">
          <p class="muted" id="widen-help">Par exemple : {escape(', '.join(neighbours[:3]) or '30, 12')}</p>
          <button type="submit">Élargir</button>
        </fieldset>
      </form>
      <form id="close-form" class="desk-action" method="post" action="/desk/{escape(department)}/actions/close">
        <input type="hidden" name="referral_id">
        <fieldset><legend>Clôturer la demande</legend>
          <label for="close-reason">Motif</label>
          <select id="close-reason" name="reason" required>{_reason_options()}</select>
          <label for="close-text">Précision (facultatif, sans donnée identifiante)</label>
          <textarea id="close-text" name="text" rows="2" maxlength="2000"></textarea>
          <button type="submit" class="danger">Clôturer</button>
        </fieldset>
      </form>
    </section>
  </div>
  <div class="col">
    <section aria-labelledby="board-h">
      <h2 id="board-h">Capacités des HAD</h2>
      <div id="board">{board_html(board)}</div>
    </section>
    <section aria-labelledby="alerts-h">
      <h2 id="alerts-h">Alertes <span class="muted">(les plus récentes en premier)</span></h2>
      <ol id="alerts" aria-live="polite" aria-relevant="additions">{alerts_html(alerts, time_zone)}</ol>
      <p id="no-alerts" class="muted"{' hidden' if alerts else ''}>Aucune alerte.</p>
    </section>
  </div>
</main>
<p class="muted foot">Connecté en tant que {escape(actor)}. Mise à jour en direct, sans rechargement.</p>
<noscript><p class="problem">Sans JavaScript, rechargez la page pour la mettre à jour.</p></noscript>
<script src="/desk/static/desk.js" defer></script>"""
    return _layout(f"Réflexe — bureau {department}", body)


# ---------------------------------------------------------------- one referral, in full


def _had_name(finess: str, had_names: dict[str, str]) -> str:
    name = had_names.get(finess)
    return f"{name} ({finess})" if name else finess


def _templates() -> Jinja2Templates:
    env = Environment(loader=PackageLoader("reflexe_notify", "templates"), autoescape=True,
                      undefined=StrictUndefined)
    env.filters.update(
        fr=lambda code, table: table.get(code, code), short=short, mpp=mpp_label, yes_no=yes_no, when=when_fr,
        commune=commune_label, reason=reason_fr, actor=actor_label, had_name=_had_name,
        hold=lambda until: hold_text(until, datetime.now(UTC)))
    env.globals.update(STATUS_FR=STATUS_FR, URGENCY_FR=URGENCY_FR, SOURCE_FR=SOURCE_FR, EQUIPMENT_FR=EQUIPMENT_FR,
                       PLACE_FR=PLACE_FR, SEX_FR=SEX_FR, CLOCK_FR=CLOCK_FR)
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


def timeline_entries(referral: dict[str, Any], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event of the timeline in French: what happened (worded as the alerts are), when, by whom."""
    entries = []
    for event in events:
        data = {**event, "referral_id": referral["referral_id"]}
        if event["type"] == "ReferralRequested":  # the request itself is shown whole beside it
            data.update(main_mpp=referral["clinical"]["main_mpp"], urgency=referral["clinical"]["urgency"])
        title, text = describe_timeline_event(event["type"], data)
        entries.append({"type": event["type"], "kind": TIMELINE_KINDS.get(event["type"], event["type"]),
                        "occurred_at": event["occurred_at"], "actor": event.get("actor"), "title": title,
                        "text": text, "note": event.get("text") or ""})
    return entries


def referral_page(department: str, department_name: str, viewer: str, referral: dict[str, Any],
                  events: list[dict[str, Any]] | None, had_names: dict[str, str], now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    requested = _parse(referral.get("requested_at"))
    body = TEMPLATES.get_template("desk_referral.html").render(
        r=referral, department=department, department_name=department_name, viewer=viewer, had_names=had_names,
        tz=time_zone_of(department), now=now.isoformat(),
        waiting=duration_fr((now - requested).total_seconds()) if requested else "—",
        timeline=None if events is None else timeline_entries(referral, events))
    return _layout(f"Réflexe — demande {short(referral['referral_id'])} ({department})", body)
