"""The e-mail telling a notice: French, plain text and HTML, pseudonymous ids only.

The body is the webhook body stored with the delivery (the very same on every attempt); the
Message-ID derives from the delivery's id, so a retried e-mail can be recognised as the same."""

from __future__ import annotations

import html
import json
from email.message import EmailMessage
from datetime import datetime
from email.utils import format_datetime
from zoneinfo import ZoneInfo

from reflexe_common.geography import time_zone_of

from reflexe_notify.domain.desk import describe

_LABELS = {
    "referral_id": "Demande", "department": "Département", "offer_id": "Offre", "had_finess": "HAD (FINESS)",
    "hold_until": "Place réservée jusqu'à", "explanation": "Explication", "by_desk": "Choix du bureau",
    "why": "Motif", "reason": "Motif", "main_mpp": "MPP principal", "urgency": "Urgence",
    "source_kind": "Origine", "recipient": "Destinataire", "webhook_id": "Notification", "event_type": "Type",
    "attempts": "Tentatives",
}


def _value(key: str, value: object, time_zone: ZoneInfo) -> str:
    if isinstance(value, bool):
        return "oui" if value else "non"
    if key == "hold_until" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value).astimezone(time_zone).strftime("%d/%m/%Y %H:%M (heure locale)")
        except ValueError:
            return value
    return str(value)


def page_url(public_url: str | None, recipient: str, department: str | None) -> str | None:
    """The page a recipient acts from: an HAD's own page, else the department's desk page."""
    if not public_url:
        return None
    kind, _, scope = recipient.partition(":")
    if kind == "had" and scope:
        return f"{public_url.rstrip('/')}/had/{scope}"
    return f"{public_url.rstrip('/')}/desk/{department}" if department else None


def compose(body: str, webhook_id: str, sender: str, to: str, desk_url: str | None = None,
            at: datetime | None = None, for_had: bool = False) -> EmailMessage:
    """The multipart (text/plain + text/html) message for a stored webhook body. `desk_url` is the
    page to act from: the desk's, or with `for_had` the HAD's own."""
    notice = json.loads(body)
    kind, data = notice["type"], notice.get("data", {})
    title, sentence = describe(kind, data)
    department = data.get("department")
    time_zone = time_zone_of(department)
    # page_url is the link below, not a row.
    rows = [(_LABELS.get(k, k), _value(k, v, time_zone)) for k, v in data.items() if v not in (None, "") and k != "page_url"]

    message = EmailMessage()
    message["Subject"] = f"[Réflexe] {title}" + (f" — département {department}" if department else "")
    message["From"] = sender
    message["To"] = to
    message["Message-ID"] = f"<{webhook_id}@reflexe.notify>"
    message["Date"] = format_datetime(at or datetime.fromisoformat(notice["timestamp"]))
    message["Auto-Submitted"] = "auto-generated"
    message["X-Reflexe-Event"] = kind
    message["Content-Language"] = "fr"

    link_label = "Page de votre HAD" if for_had else "Tableau de bord du bureau"
    link_text = f"\n{link_label} : {desk_url}\n" if desk_url else ""
    text = (f"{title}\n\n{sentence}\n\n" + "\n".join(f"{label} : {value}" for label, value in rows)
            + f"\n{link_text}\n--\nMessage automatique de Réflexe, ne pas répondre.\n"
              "Il ne contient aucune donnée directement identifiante : les demandes sont désignées par leur numéro.\n")
    message.set_content(text, charset="utf-8")

    esc = html.escape
    table = "".join(f"<tr><th scope=\"row\" style=\"text-align:left;padding:2px 12px 2px 0\">{esc(label)}</th>"
                    f"<td>{esc(value)}</td></tr>" for label, value in rows)
    link_action = "Ouvrir la page de votre HAD" if for_had else "Ouvrir le tableau de bord du bureau"
    link_html = f'<p><a href="{esc(desk_url)}">{link_action}</a></p>' if desk_url else ""
    page = (f'<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>{esc(title)}</title></head>'
            f'<body style="font-family:sans-serif;color:#1a1a1a;background:#fff">'
            f"<h1 style=\"font-size:1.2em\">{esc(title)}</h1><p>{esc(sentence)}</p>"
            f"<table>{table}</table>{link_html}"
            f'<p style="color:#555;font-size:.9em">Message automatique de Réflexe, ne pas répondre. Il ne contient '
            f"aucune donnée directement identifiante : les demandes sont désignées par leur numéro.</p></body></html>")
    message.add_alternative(page, subtype="html", charset="utf-8")
    return message
