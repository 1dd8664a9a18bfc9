"""The chaos checker's figures on fabricated records: each one counts what it must, and can fail."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from chaos.checker import (Accepted, CapacityStep, ClockRow, Event, LoggedDelivery, Receipt, ReferralRow, Subscription,
                           double_booked, duplicated_records, expected_notifications, failed, lost, release_times,
                           summary, unexplained, webhook_figures)

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
HAD = "349000018"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def event(type_: str, referral: str = "r1", at: float = 0, offset: int = 0, event_id: str | None = None, **fields) -> Event:
    return Event("reflexe.referral.events.v1", 0, offset, event_id or f"{type_}-{referral}-{offset}", f"reflexe.v1.{type_}",
                 referral, t(at), fields)


def test_lost_names_accepted_referrals_and_messages_the_platform_does_not_have() -> None:
    accepted = [Accepted("rest", "a"), Accepted("fhir", "b"), Accepted("rest", "c"), Accepted("hl7", "340780477/M1")]
    assert lost(accepted, {"a", "b", "c"}, {"a", "b", "c"}, {"340780477/M1"}) == []
    missing = lost(accepted, {"a", "c"}, {"a"}, set())
    assert missing == ["fhir b: no referral row", "rest c: no ReferralRequested on the event log", "hl7 340780477/M1"]


def test_duplicated_records_counts_extra_copies_of_an_event_id() -> None:
    assert duplicated_records([event("OfferMade", offset=1), event("OfferMade", offset=2)]) == 0
    copies = [event("OfferMade", offset=n, event_id="same") for n in range(3)] + [event("PatientAdmitted", offset=9)]
    assert duplicated_records(copies) == 2


def hold(position: int, at: float, hold_id: str, hold_until: float = 600) -> CapacityStep:
    return CapacityStep(position, t(at), "reflexe.v1.OfferProposed", HAD, hold_id=hold_id, hold_until=t(hold_until))


def declare(position: int, at: float, places: int, status: str = "OPEN") -> CapacityStep:
    return CapacityStep(position, t(at), "reflexe.v1.CapacityDeclared", HAD, places=places, status=status)


def test_double_booked_replays_holds_in_commit_order_under_the_declaration_in_force() -> None:
    # 2 places: two holds, one declined, a third hold: fine. A new declaration of 1 place with a
    # hold outstanding: that one is grandfathered, one more fits.
    steps = [declare(1, 0, 2), hold(2, 1, "h1"), hold(3, 2, "h2"), hold(4, 10, "h3"), declare(5, 11, 1), hold(6, 12, "h4")]
    released = release_times([event("OfferMade", "r2", 2, 1, offer_id="h2"), event("OfferDeclined", "r2", 5, 2, offer_id="h2")])
    assert released == {"h2": t(5)}
    assert double_booked(steps, released, {}) == []
    # Without the decline, the third hold is one too many.
    assert double_booked(steps, {}, {}) == [f"{HAD}: 3 places taken under a declaration of 2 at {t(10).isoformat()} (hold h3)"]
    # A release the referral service committed AFTER the hold was placed does not excuse it.
    assert double_booked(steps, {"h2": t(11)}, {})
    # A hold that ran out unanswered frees its place at its end, one accepted in time does not.
    lapsing = [declare(1, 0, 1), hold(2, 1, "h1", hold_until=5), hold(3, 6, "h2")]
    assert double_booked(lapsing, {}, {}) == []
    assert double_booked(lapsing, {}, {"h1": t(3)})
    # Placed while SATURATED, or with no declaration at all.
    assert double_booked([declare(1, 0, 5, "SATURATED"), hold(2, 1, "h1")], {}, {}) == [f"{HAD}: hold h1 placed while SATURATED"]
    assert double_booked([hold(1, 1, "h1")], {}, {})


def test_a_cancellation_releases_the_open_or_accepted_offer_not_an_admitted_one() -> None:
    events = [event("OfferMade", "r1", 1, 1, offer_id="o1"), event("ReferralCancelled", "r1", 3, 2),
              event("OfferMade", "r2", 1, 3, offer_id="o2"), event("PatientAdmitted", "r2", 2, 4),
              event("ReferralCancelled", "r2", 4, 5)]
    assert release_times(events) == {"o1": t(3)}


def receipt(recipient: str, webhook_id: str, type_: str, at: str = "2026-11-26T10:00:00+00:00", **data) -> Receipt:
    return Receipt(recipient, webhook_id, type_, json.dumps({"type": type_, "timestamp": at, "data": data}))


def test_webhook_figures_find_undelivered_and_twice_delivered_events() -> None:
    receipts = [receipt(f"had:{HAD}", "msg_1", "offer.proposed", offer_id="o1", referral_id="r1"),
                receipt(f"had:{HAD}", "msg_1", "offer.proposed", offer_id="o1", referral_id="r1"),  # a retry: fine
                receipt("desk:34", "msg_2", "referral.requested", referral_id="r1")]
    expected = [(f"had:{HAD}", "offer.proposed", "o1"), ("desk:34", "referral.requested", "r1")]
    logged = [LoggedDelivery("msg_1", f"had:{HAD}", "DELIVERED"), LoggedDelivery("msg_2", "desk:34", "DELIVERED")]
    assert webhook_figures(receipts, logged, expected) == ([], [])
    undelivered, twice = webhook_figures(receipts[:2], [*logged, LoggedDelivery("msg_3", "desk:31", "FAILED")], expected)
    assert undelivered == ["desk:34 msg_2 (DELIVERED)", "desk:31 msg_3 (FAILED)",
                           "desk:34 referral.requested naming r1: never received"]
    assert twice == []
    # The same event under a second webhook-id: delivered twice.
    again = receipt(f"had:{HAD}", "msg_9", "offer.proposed", offer_id="o1", referral_id="r1")
    assert webhook_figures([*receipts, again], logged, expected)[1] == [
        f"had:{HAD}: ['msg_1', 'msg_9'] (not in notify's log)"]
    # Notify's log tells the causes apart: two events for one subscription, or two subscriptions.
    one = [LoggedDelivery("msg_1", f"had:{HAD}", "DELIVERED", "s1"), LoggedDelivery("msg_9", f"had:{HAD}", "DELIVERED", "s1")]
    assert webhook_figures([*receipts, again], one, expected)[1] == [
        f"had:{HAD}: ['msg_1', 'msg_9'] (one subscription: two events published for one)"]
    two = [one[0], LoggedDelivery("msg_9", f"had:{HAD}", "DELIVERED", "s2")]
    assert webhook_figures([*receipts, again], two, expected)[1] == [
        f"had:{HAD}: ['msg_1', 'msg_9'] (2 subscriptions of the recipient)"]


def test_expected_notifications_follow_the_event_log_after_the_subscription() -> None:
    events = [event("ReferralRequested", "r1", 5, 1, department="34"), event("OfferMade", "r1", 6, 2, offer_id="o1", had_finess=HAD),
              event("ReferralRequested", "r0", 0, 3, department="34"), event("ReferralRequested", "r5", 7, 4, department="31")]
    subscriptions = [Subscription("desk:34", t(1)), Subscription(f"had:{HAD}", t(1))]
    assert expected_notifications(events, subscriptions) == [("desk:34", "referral.requested", "r1"),
                                                              (f"had:{HAD}", "offer.proposed", "o1")]


def test_unexplained_referrals() -> None:
    now = t(1000)
    rows = [ReferralRow("closed", "CANCELLED"), ReferralRow("admitted", "ADMITTED"), ReferralRow("escalated", "ESCALATED"),
            ReferralRow("offered", "OFFERED"), ReferralRow("expiring", "OFFERED")]
    events = [event("ReferralEscalated", "escalated", 10, 1), event("OfferMade", "offered", 900, 2, hold_until=t(1200)),
              event("OfferMade", "expiring", 100, 3, hold_until=t(200))]
    clocks = [ClockRow("expiring", "HOLD_EXPIRY", t(990))]
    assert unexplained(rows, events, clocks, now) == []
    # A search that ended in nothing, an escalation not on the log, an offer whose clock is gone,
    # a clock overdue.
    stuck = [ReferralRow("searching", "REQUESTED"), ReferralRow("silent", "ESCALATED"), ReferralRow("expiring", "OFFERED"),
             ReferralRow("late", "ACCEPTED")]
    found = unexplained(stuck, events, [ClockRow("late", "ADMISSION_OVERDUE", t(100))], now)
    assert [f.split()[0] for f in found] == ["searching", "silent", "expiring", "late"]


def test_the_summary_is_one_json_line_and_any_figure_fails_the_run() -> None:
    figures = {"lost": 0, "double_booked": 0, "duplicated_records": 0, "webhooks_undelivered": 0,
               "webhooks_delivered_twice": 0, "unexplained": 0, "indicators_equal_oracle": True, "referrals": 12}
    line = summary(figures)
    assert "\n" not in line and json.loads(line) == figures
    assert failed(figures) == []
    for name in ("lost", "double_booked", "duplicated_records", "webhooks_undelivered", "webhooks_delivered_twice",
                 "unexplained"):
        assert failed({**figures, name: 1}) == [name]
    assert failed({**figures, "indicators_equal_oracle": False}) == ["indicators_equal_oracle"]


def test_the_indicators_comparison_flags_any_difference_but_the_share_of_time_to_the_query() -> None:
    from chaos.observe import compare, to_oracle_events

    expected = {("2026-11-26", "34"): {"referrals_received": 3, "first_offer_median_min": 1.5}}
    row = {"period": "2026-11-26", "key": "34", "referrals_received": 3, "first_offer_median_min": 1.5, "stale_share": 0.3}
    assert compare([row], expected, "department") == []
    assert compare([{**row, "referrals_received": 4}], expected, "department") == [
        "department ('2026-11-26', '34') referrals_received: API 4, oracle 3"]
    assert compare([{**row, "first_offer_median_min": None}], expected, "department")
    assert compare([], expected, "department") == ["department ('2026-11-26', '34'): missing from the API"]
    # The oracle measures delays from the request's own time, as the indicators are defined.
    requested = event("ReferralRequested", "r1", 10, 1, department="34", requested_at=t(2), source_finess="340780477",
                      source_kind="ED", place="HOME", urgency="WITHIN_24H", planned_date="", avis=None)
    [ev] = to_oracle_events([requested, requested])  # one event id, one record
    assert (ev.kind, ev.at, ev.department) == ("ReferralRequested", t(2), "34")
