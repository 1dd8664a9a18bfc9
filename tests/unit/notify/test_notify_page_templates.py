"""The pages' HTML comes from the Jinja2 templates only, and every template escapes what it is
given: a value carrying markup is shown as text wherever it lands, in any page or refreshed region."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest

from reflexe_notify.entrypoints.pages import views
from reflexe_notify.entrypoints.pages.rendering import TEMPLATES
from reflexe_notify.entrypoints.pages.labels import SCRIPT_LABELS

EVIL = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
AT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
RID = "0b8f5c3e-1111-4222-8333-444455556666"
REFERRAL = {
    "referral_id": RID, "department": "34", "status": "OFFERED", "requested_at": AT.isoformat(), "waiting_seconds": 60,
    "source": {"kind": "ED", "finess": "340780477", "unit": EVIL, "prescriber_id": None},
    "patient": {"pseudonym": "p", "birth_year": 1940, "sex": "F", "care_commune": "34172", "place_of_care": "HOME",
                "ehpad_finess": None},
    "clinical": {"main_mpp": "04", "associated_mpp": [], "karnofsky": 30, "equipment": [], "palliative": True,
                 "urgency": "WITHIN_24H", "planned_date": None, "expected_duration_days": 10},
    "conditions": {"patient_consent": True, "gp_agreement": True, "caregiver_present": True},
    "avis": {"eligible": True, "reason": None, "text": EVIL}, "desired_admission_at": None, "ed_arrival_at": None,
    "ed_exited_at": None, "closed_reason": None, "accepted_had": None, "admitted_had": None, "discharged_at": None,
    "closed_at": None, "tried_hads": ["340000001"], "departments_searched": ["34"], "clocks": [],
    "current_offer": {"offer_id": "o1", "had_finess": "340000001", "hold_until": AT.isoformat(), "made_at": AT.isoformat(),
                      "explanation": EVIL, "by_desk": False},
}
BOARD = {"stale_after_seconds": 3600, "hads": [{"finess": "340000001", "name": EVIL, "status": "OPEN", "live_places": 1,
                                                "declared_places": 2, "authorised_places": 3, "stale": False,
                                                "declaration_age_seconds": 60}]}
ALERT = {"seq": 1, "type": "referral.escalated", "occurred_at": AT.isoformat(), "title": EVIL, "text": EVIL}
HAD_SNAPSHOT = {"offers": [REFERRAL], "patients": [{**REFERRAL, "status": "ACCEPTED"}],
                "had": {"name": EVIL, "authorised_places": 3}, "head": 1, "department": "34",
                "latest": {"places_available": 1, "admissions_possible_today": 1, "status": "OPEN",
                           "declared_at": AT.isoformat()},
                "history": [{"type": "offer.proposed", "occurred_at": AT.isoformat(), "title": EVIL, "text": EVIL}]}

# Accepted pending the HAD's evaluation (the macro with the confirm and withdraw forms).
PENDING = {**REFERRAL, "status": "ACCEPTED", "evaluation_pending": True, "accepted_at": AT.isoformat(),
           "current_offer": None, "current_avis": {"eligible": False, "reason": "OTHER", "text": EVIL},
           "clocks": [{"kind": "ADMISSION_OVERDUE", "due_at": AT.isoformat(), "offer_id": None}]}
HAD_SNAPSHOT["patients"].append(PENDING)
# A row of the liaison nurse's list (the referral service's reduced view).
LIAISON_ROW = {"referral_id": RID, "department": "34", "status": "REQUESTED", "requested_at": AT.isoformat(),
               "source": REFERRAL["source"], "patient": {"pseudonym": "p", "care_commune": "34172", "place_of_care": "HOME"},
               "clinical": REFERRAL["clinical"], "place_held": False, "held_by_own_had": False,
               "evaluation_pending": False, "current_avis": {"eligible": False, "reason": "OTHER", "text": EVIL}}

# Each template, rendered through what the pages use, with markup in a value it shows.
RENDERINGS: dict[str, Callable[[], str]] = {
    "base.html": lambda: views.unavailable_page("34", EVIL, "m"),  # the title
    "login.html": lambda: views.login_page("desk", EVIL),
    "forbidden.html": lambda: views.forbidden_page("had", EVIL),
    "unavailable.html": lambda: views.unavailable_page("34", "Demande introuvable", EVIL),
    "parts.html": lambda: views.desk_page("34", "Hérault", EVIL, None, None, [], 0, []),  # the footer's actor
    "desk.html": lambda: views.desk_page("34", EVIL, "desk:34", BOARD, {"referrals": [REFERRAL]}, [ALERT], 1, [], EVIL),
    "desk_parts.html": lambda: "".join(views.desk_fragments({"referrals": [REFERRAL]}, BOARD).values())
                                 + views.alert_item(ALERT, AT.tzinfo),
    "desk_referral.html": lambda: views.referral_page("34", "Hérault", EVIL, REFERRAL, [], {"340000001": EVIL}, now=AT),
    "had.html": lambda: views.had_page("340000001", EVIL, HAD_SNAPSHOT, now=AT),
    "liaison.html": lambda: views.liaison_page("340000001", EVIL, {"34": [], "30": None}, EVIL, now=AT),
    "liaison_parts.html": lambda: views.liaison_page("340000001", "liaison:340000001", {"34": [LIAISON_ROW]}, now=AT),
    "had_parts.html": lambda: "".join(str(v) for v in views.had_fragments(HAD_SNAPSHOT, "340000001").values()),
}


def test_every_template_is_checked_below() -> None:
    assert set(TEMPLATES.env.list_templates()) == set(RENDERINGS)


@pytest.mark.parametrize("template", sorted(RENDERINGS))
def test_each_template_escapes_what_it_shows(template: str) -> None:
    html = RENDERINGS[template]()
    assert ESCAPED in html
    assert EVIL not in html


def test_the_scripts_words_are_data_not_code() -> None:
    """Rendered into a JSON block (never executed, so the Content-Security-Policy's script-src 'self' holds)."""
    page = views.desk_page("34", "Hérault", "desk:34", None, None, [], 0, [])
    block = re.search(r'<script type="application/json" id="page-labels">(.*?)</script>', page, re.S)
    assert block and SCRIPT_LABELS["live"] in block.group(1)
    assert page.index('id="page-labels"') < page.index('src="/desk/static/page.js"') < page.index('src="/desk/static/desk.js"')
    assert "page-labels" not in views.login_page("desk"), "a page without script has no words for one"


_TAG = re.compile(r"<(/?)(!doctype|html|head|body|div|p|a|span|table|thead|tbody|tr|td|th|caption|li|ol|ul|form|input|"
                  r"select|option|button|main|section|h[1-6]|script|link|meta|code|strong|br|label|fieldset|legend|"
                  r"textarea|dl|dt|dd|time|article|header|noscript|q)\b", re.I)


def html_in_python(source: str) -> list[int]:
    """Lines of a Python source where a string (plain or f-string) carries HTML markup."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and _TAG.search(node.value):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_check_finds_html_built_in_python() -> None:
    assert html_in_python("x = f'<td>{v}</td>'\n") == [1]
    assert html_in_python("x = ('<p class=\"problem\">' + escape(v) + '</p>')\n") == [1]
    assert html_in_python("x = 'a < b and c > d'\n") == []


def test_no_page_html_is_built_in_python() -> None:
    entrypoints = Path(str(resources.files("reflexe_notify").joinpath("entrypoints")))
    found = {str(path.relative_to(entrypoints)): lines for path in sorted(entrypoints.rglob("*.py"))
             if (lines := html_in_python(path.read_text(encoding="utf-8")))}
    assert found == {}, "HTML belongs in templates/ (autoescaped), not in Python strings"
