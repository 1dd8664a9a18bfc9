"""The pages' HTML, in French, from the templates (templates/*.html, every value escaped): what
each page and each refreshed region is given to show. No I/O here; the page entrypoints read the
other services and hand their answers over."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from markupsafe import Markup

from reflexe_common.geography import time_zone_of
from reflexe_notify.domain.desk import TIMELINE_KINDS, describe_timeline_event
from reflexe_notify.entrypoints.pages.labels import (EQUIPMENT_FR, PLACE_FR, SOURCE_FR, URGENCY_FR, avis_fr,
                                                     commune_label, current_avis, duration_fr, fr, mpp_label,
                                                     parse_time, when_fr, yes_no)
from reflexe_notify.entrypoints.pages.rendering import TEMPLATES, fragment, now as clock_now, render

# ---------------------------------------------------------------- login and refusals (desk and HAD)


def login_page(family: str, error: str | None = None, next_path: str = "") -> str:
    target = f"/{family}/login" + (f"?next={quote(next_path, safe='/')}" if next_path else "")
    return render("login.html", family=family, error=error, target=target, static=f"/{family}/static")


def forbidden_page(family: str, message: str) -> str:
    return render("forbidden.html", family=family, message=message, static=f"/{family}/static")


def unavailable_page(department: str, title: str, message: str) -> str:
    """A referral page that cannot be shown (unknown here, or its service down)."""
    return render("unavailable.html", department=department, heading=title, message=message, static="/desk/static")


# ---------------------------------------------------------------- the desk


def board_html(board: dict[str, Any] | None) -> Markup:
    return fragment("desk_parts.html", "board", board)


def queue_html(queue: dict[str, Any] | None, board: dict[str, Any] | None, now: datetime | None = None,
               desk: str | None = None) -> Markup:
    return fragment("desk_parts.html", "queue", queue, board, now or clock_now(), desk)


def alert_item(alert: dict[str, Any], time_zone) -> Markup:
    """An alert, timed on the department's own clock (Paris, or the overseas department's)."""
    return fragment("desk_parts.html", "alert", alert, time_zone)


def referral_options(queue: dict[str, Any] | None, desk: str | None = None) -> Markup:
    return fragment("desk_parts.html", "referral_options", queue, desk)


def had_options(board: dict[str, Any] | None) -> Markup:
    return fragment("desk_parts.html", "had_options", board)


def desk_fragments(queue: dict[str, Any] | None, board: dict[str, Any] | None, desk: str | None = None) -> dict[str, str]:
    """The regions the desk's script swaps in, from the macros the page renders them with."""
    return {"queue": str(queue_html(queue, board, desk=desk)), "board": str(board_html(board)),
            "referral_options": str(referral_options(queue, desk)), "had_options": str(had_options(board))}


def desk_page(department: str, department_name: str, actor: str, board: dict[str, Any] | None,
              queue: dict[str, Any] | None, alerts: list[dict[str, Any]], head: int, neighbours: list[str],
              flash: str | None = None, now: datetime | None = None) -> str:
    time_zone = time_zone_of(department)
    return render("desk.html", department=department, department_name=department_name, actor=actor, board=board,
                  queue=queue, alerts=alerts, neighbours=neighbours, flash=flash, tz=time_zone,
                  now=now or clock_now(), static="/desk/static",
                  config={"department": department, "head": head, "timeZone": time_zone.key})


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
    now = now or clock_now()
    requested = parse_time(referral.get("requested_at"))
    return render("desk_referral.html",
                  r=referral, department=department, department_name=department_name, viewer=viewer,
                  had_names=had_names, tz=time_zone_of(department), now=now, static="/desk/static",
                  waiting=duration_fr((now - requested).total_seconds()) if requested else "—",
                  timeline=None if events is None else timeline_entries(referral, events))


# ---------------------------------------------------------------- the HAD


def offer_facts(r: dict[str, Any]) -> list[tuple[str, str]]:
    """What a coordinating nurse needs to decide an offer, in words."""
    clinical, conditions, patient = r.get("clinical", {}), r.get("conditions") or {}, r.get("patient", {})
    time_zone = time_zone_of(r.get("department"))
    planned = clinical.get("planned_date")
    avis_text = avis_fr(current_avis(r))
    return [
        ("MPP principal", mpp_label(clinical.get("main_mpp", ""))),
        ("MPP associés", ", ".join(mpp_label(c) for c in clinical.get("associated_mpp", [])) or "aucun"),
        ("Indice de Karnofsky", f"{clinical['karnofsky']} %" if clinical.get("karnofsky") is not None else "—"),
        ("Équipements", ", ".join(fr(e, EQUIPMENT_FR) for e in clinical.get("equipment", [])) or "aucun"),
        ("Soins palliatifs", yes_no(clinical.get("palliative"))),
        ("Urgence", fr(clinical.get("urgency", ""), URGENCY_FR) + (f", le {when_fr(planned, time_zone)}" if planned else "")),
        ("Admission souhaitée", when_fr(r.get("desired_admission_at"), time_zone) if r.get("desired_admission_at") else "—"),
        ("Durée prévue", f"{clinical['expected_duration_days']} jours" if clinical.get("expected_duration_days") else "—"),
        ("Demandée le", when_fr(r.get("requested_at"), time_zone)),
        ("Consentement du patient", yes_no(conditions.get("patient_consent"))),
        ("Accord du médecin traitant", yes_no(conditions.get("gp_agreement"))),
        ("Aidant présent", yes_no(conditions.get("caregiver_present"))),
        ("Avis HAD", avis_text),
        ("Commune de prise en charge", commune_label(patient.get("care_commune", ""))),
        ("Lieu de soins", fr(patient.get("place_of_care", ""), PLACE_FR)),
        ("Origine", fr(r.get("source", {}).get("kind", ""), SOURCE_FR)),
    ]


TEMPLATES.env.globals["offer_facts"] = offer_facts


def offer_ids(offers: list[dict[str, Any]]) -> list[str]:
    return [o["referral_id"] for o in offers]


def offers_html(offers: list[dict[str, Any]] | None, finess: str, now: datetime | None = None) -> Markup:
    return fragment("had_parts.html", "offers", offers, finess, now or clock_now())


def had_fragments(snapshot: dict[str, Any], finess: str) -> dict[str, Any]:
    """The regions the HAD's script merges or swaps in, from the macros the page renders them with."""
    time_zone = time_zone_of(snapshot["department"])
    return {"offer_ids": offer_ids(snapshot["offers"] or []),
            "offers": str(offers_html(snapshot["offers"], finess)),
            "patients": str(fragment("had_parts.html", "patients", snapshot["patients"], finess, clock_now(), time_zone)),
            "capacity": str(fragment("had_parts.html", "capacity", snapshot["had"], snapshot["latest"], time_zone)),
            "history": str(fragment("had_parts.html", "history", snapshot["history"], time_zone))}


def had_page(finess: str, actor: str, snapshot: dict[str, Any], now: datetime | None = None) -> str:
    """`snapshot`: offers, patients (None when the referral service is down), had, latest, history, head, department."""
    s = snapshot
    return render("had.html", finess=finess, name=(s["had"] or {}).get("name") or finess, actor=actor,
                  offers=s["offers"], patients=s["patients"], had=s["had"], latest=s["latest"], history=s["history"],
                  tz=time_zone_of(s["department"]), now=now or clock_now(), static="/had/static",
                  config={"finess": finess, "head": s["head"], "offers": offer_ids(s["offers"] or [])})


# ---------------------------------------------------------------- the liaison nurse


def liaison_page(finess: str, actor: str, referrals: dict[str, list[dict[str, Any]] | None],
                 flash: str | None = None, now: datetime | None = None) -> str:
    """`referrals`: each of her departments' open referrals (None when the referral service is down)."""
    return render("liaison.html", finess=finess, actor=actor, referrals=referrals, flash=flash,
                  now=now or clock_now(), static="/liaison/static")
