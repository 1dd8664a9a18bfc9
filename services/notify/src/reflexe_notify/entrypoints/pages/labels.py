"""The French words of the desk's and the HADs' pages: the vocabulary's labels and the duration
formatter come from reflexe_common.labels (shared with the matcher's explanations and the alerts);
the words only pages use (actors, clocks, login...) and the formatters of times are here, with the
words the pages' script shows (rendered into each page by the server, so that the script has no
copy of its own)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from reflexe_common.geography import Geography
# The vocabulary's labels, offered to the templates and views beside the pages' own words.
from reflexe_common.labels import (CAPACITY_STATUS_FR, CONDITION_FR, DURATION_UNITS, EQUIPMENT_FR, PLACE_FR,
                                   REFERRAL_STATUS_FR, SEX_FR, SOURCE_FR, URGENCY_FR, duration_fr)
from reflexe_common.vocabulary import MPP_LABELS
from reflexe_notify.domain.desk import reason_fr

STATUS_FR = REFERRAL_STATUS_FR
# The HADs' board also shows those that have declared nothing yet.
BOARD_STATUS_FR = {**CAPACITY_STATUS_FR, "UNDECLARED": "Non déclarée"}
# What keeps an INCOMPLETE referral from being offered, named on its queue row.
MISSING_FR = CONDITION_FR
CLOCK_FR = {"HOLD_EXPIRY": "Fin de la réservation de place", "OFFER_UNANSWERED": "Relance de l’HAD sans réponse",
            "ADMISSION_OVERDUE": "Objectif d’admission (24 h après la demande, ou le jour programmé)"}
# Who acted on a referral, from the actor of its events ("kind:id").
ACTOR_FR = {"hospital": "Établissement de santé", "ehpad": "EHPAD", "gp": "Médecin traitant", "had": "HAD",
            "desk": "Bureau de coordination", "system": "Réflexe (automatique)"}

# Each page family's login and refusal pages.
LOGIN_FR = {
    "desk": {"title": "Réflexe — connexion du bureau de coordination", "heading": "Réflexe — bureau de coordination",
             "intro": "Connectez-vous avec le compte de votre bureau, sur la page du service d’identification de la "
                      "région. Vos jetons restent sur le serveur.",
             "wrong_account": "Ce compte n’est pas celui d’un bureau de coordination."},
    "had": {"title": "Réflexe — connexion de l’HAD", "heading": "Réflexe — hospitalisation à domicile",
            "intro": "Infirmière ou infirmier de coordination : connectez-vous avec le compte de votre HAD, sur la "
                     "page du service d’identification (une infirmière de liaison y est conduite à sa propre page). "
                     "Vos jetons restent sur le serveur.",
            "wrong_account": "Ce compte n’est pas celui d’une HAD."},
    "liaison": {"title": "Réflexe — connexion de l’infirmière de liaison", "heading": "Réflexe — avis HAD",
                "intro": "Infirmière ou infirmier de liaison d’une HAD : connectez-vous avec votre compte, sur la page "
                         "du service d’identification, pour donner l’avis HAD sur les demandes de vos départements. "
                         "Vos jetons restent sur le serveur.",
                "wrong_account": "Ce compte n’est pas celui d’une infirmière de liaison."},
}

# The evaluation before admission, as the pages name it.
EVALUATION_PENDING = "Évaluation en cours"
AVIS_FR = {True: "favorable", False: "défavorable"}

HOLD_EXPIRES_IN = "expire dans {}"
HOLD_EXPIRED = "expirée"
DUE_IN = "dans {}"
OVERDUE = "dépassé"
UNREACHABLE = "La plateforme ne répond pas : rien n’a été transmis, réessayez."

# What the pages' script writes itself ({} is replaced by the script).
SCRIPT_LABELS = {
    "units": DURATION_UNITS, "expiresIn": HOLD_EXPIRES_IN, "expired": HOLD_EXPIRED, "dueIn": DUE_IN, "overdue": OVERDUE,
    "live": "En direct", "offline": "Hors ligne — reconnexion…",
    "unreachable": UNREACHABLE, "error": "Erreur {}", "refused": "Refusé",
    "chooseReferral": "Choisissez d’abord une demande dans la file.", "chooseReason": "Choisissez un motif.",
    "newOffer": "Nouvelle offre reçue : demande {}.", "newOffers": "{} nouvelles offres reçues.",
}


def fr(code: Any, table: dict[str, str]) -> Any:
    """A code's French label, or the code itself when the table does not know it."""
    return table.get(code, code) if isinstance(code, str) else code


def mpp_label(code: str) -> str:
    label = MPP_LABELS.get(code)
    return f"{code} — {label}" if label else code


def yes_no(value: Any) -> str:
    return "non renseigné" if value is None else ("oui" if value else "non")


def parse_time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def when_fr(value: str | None, time_zone: ZoneInfo, with_time: bool = True) -> str:
    """A time on the department's own clock; a date alone as a date."""
    at = parse_time(value)
    if at is None:
        return value or "—"
    if at.tzinfo is None:  # a date alone
        return at.strftime("%d/%m/%Y")
    return at.astimezone(time_zone).strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")


def clock_fr(value: str | None, time_zone: ZoneInfo, pattern: str) -> str:
    """A time on the department's clock in a short pattern (lists of alerts and history)."""
    at = parse_time(value)
    return at.astimezone(time_zone).strftime(pattern) if at else ""


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


def had_name(finess: str, had_names: dict[str, str]) -> str:
    name = had_names.get(finess)
    return f"{name} ({finess})" if name else finess


def hold_text(hold_until: str | None, now: datetime) -> str:
    until = parse_time(hold_until)
    if until is None:
        return "—"
    left = (until - now).total_seconds()
    return HOLD_EXPIRES_IN.format(duration_fr(left)) if left > 0 else HOLD_EXPIRED


def avis_fr(avis: dict[str, Any] | None) -> str:
    """The avis HAD in words: 'non donné', 'favorable — …', 'défavorable (motif) — …'."""
    if not avis:
        return "non donné"
    words = AVIS_FR[bool(avis.get("eligible"))]
    if not avis.get("eligible") and avis.get("reason"):
        words += f" ({reason_fr(avis['reason'])})"
    return words + (f" — {avis['text']}" if avis.get("text") else "")


def current_avis(r: dict[str, Any]) -> dict[str, Any] | None:
    """A referral's latest avis HAD (a liaison nurse's after posting, else the request's)."""
    return r.get("current_avis") or r.get("avis")


def due_text(due_at: str | None, now: datetime) -> str:
    """A target's remaining time ('dans 3 h 05 min'), or 'dépassé' (the page script renders the same)."""
    due = parse_time(due_at)
    if due is None:
        return "—"
    left = (due - now).total_seconds()
    return DUE_IN.format(duration_fr(left)) if left > 0 else OVERDUE


def admission_due(r: dict[str, Any]) -> str | None:
    """When the referral's patient should be admitted (its "not admitted" clock), if it runs."""
    return next((c.get("due_at") for c in r.get("clocks") or [] if c.get("kind") == "ADMISSION_OVERDUE"), None)


def since_text(since: str | None, now: datetime) -> str:
    """How long ago a time was, as the page script's running clock renders it."""
    at = parse_time(since)
    return duration_fr((now - at).total_seconds()) if at else "—"
