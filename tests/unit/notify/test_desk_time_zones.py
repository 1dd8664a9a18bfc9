"""People read times on their own clock: Paris time in metropolitan France, local time overseas."""

from __future__ import annotations

import json

from reflexe_common.geography import Geography, time_zone_of
from reflexe_notify.domain.email import compose
from reflexe_notify.entrypoints.pages import views

ALERT = {"seq": 1, "type": "referral.escalated", "occurred_at": "2026-11-26T08:30:00+00:00", "title": "t", "text": "x"}


def test_each_department_has_the_time_zone_its_people_live_in() -> None:
    assert time_zone_of("34").key == time_zone_of("2A").key == "Europe/Paris"
    assert Geography.load().department("974").time_zone.key == "Indian/Reunion"
    assert {time_zone_of(d).key for d in ("971", "972", "973", "976")} == {
        "America/Guadeloupe", "America/Martinique", "America/Cayenne", "Indian/Mayotte"}


def test_desk_alerts_show_local_time_not_utc() -> None:
    assert ">26/11 09:30:00<" in views.alert_item(ALERT, time_zone_of("34"))  # UTC+1 in November
    assert ">26/11 12:30:00<" in views.alert_item(ALERT, time_zone_of("974"))  # UTC+4
    assert ">26/11 04:30:00<" in views.alert_item(ALERT, time_zone_of("971"))  # UTC-4
    assert "UTC" not in views.alert_item(ALERT, time_zone_of("34"))
    page = views.desk_page("974", "La Réunion", "desk:974", None, None, [ALERT], 1, [])
    assert "Indian/Reunion" in page and ">26/11 12:30:00<" in page


def test_emails_give_the_hold_in_the_departments_time() -> None:
    body = json.dumps({"type": "offer.proposed", "timestamp": "2026-11-26T08:00:00+00:00",
                       "data": {"department": "972", "hold_until": "2026-11-26T08:30:00+00:00"}})
    text = compose(body, "msg_1", "a@b.test", "c@d.test").get_body(("plain",)).get_content()
    assert "26/11/2026 04:30 (heure locale)" in text and "UTC" not in text
