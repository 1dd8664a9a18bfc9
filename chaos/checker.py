"""The chaos run's independent checker: after the run, what the platform stored (PostgreSQL), what
it published (Kafka) and what reached the simulated HADs and desks (the receiver's journal) are
compared with what the traffic driver was told was accepted.

It is its own code: it imports nothing of the services, only the generated protobuf classes (to
decode the event log) and the topic names. Each figure is computed by a pure function over plain
records (unit-tested on fabricated data, tests/unit/chaos); `load` gathers those records and
`check` prints ONE JSON line.

Figures (docs/chaos.md):
  lost                      accepted referrals (HTTP 2xx, FHIR 2xx) absent from the referral table or
                            from the committed event log, and HL7 messages acknowledged AA that the
                            gateway did not record
  double_booked             moments an HAD had more holds (admissions included) under its declaration
                            in force than the declaration's places, replayed in the matcher's commit
                            order with releases at the time the referral service committed them
  duplicated_records        extra copies of an event id on the event topics, as consumers read them
                            (read_committed); `duplicated_records_uncommitted` counts read_uncommitted
  webhooks_undelivered      deliveries notify logged, and notifications the event log calls for (an
                            offer to a subscribed HAD, a referral to a subscribed desk), that never
                            reached the receiver
  webhooks_delivered_twice  one event notified to one recipient under more than one webhook-id (a
                            webhook-id received again is a retry, which receivers drop)
  unexplained               referrals neither closed nor waiting for something the run explains
  indicators_equal_oracle   the indicators API equals an oracle computed here from the raw events
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# Figures that must be zero for the run to pass.
MUST_BE_ZERO = ("lost", "double_booked", "duplicated_records", "webhooks_undelivered", "webhooks_delivered_twice",
                "unexplained")

# Statuses a referral may end the run in without more explanation.
CLOSED = {"INELIGIBLE", "CANCELLED", "DISCHARGED"}
# Waiting for a person, not for the platform: the patient in care, the admission, the consents, the desk.
WAITING_FOR_PEOPLE = {"ADMITTED", "ACCEPTED", "INCOMPLETE"}
RELEASING = {"reflexe.v1.OfferDeclined", "reflexe.v1.OfferExpired", "reflexe.v1.OfferWithdrawn",
             "reflexe.v1.AcceptanceWithdrawn"}


# ---- plain records ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """What the traffic driver was told was accepted: a referral (REST or FHIR) or an HL7 message."""

    door: str  # rest | fhir | hl7
    key: str  # the referral id, or "<sender>/<control id>" for HL7


@dataclass(frozen=True)
class Event:
    """One record of an event topic, decoded: its id, type and the fields the checker reads."""

    topic: str
    partition: int
    offset: int
    event_id: str
    type: str
    referral_id: str = ""
    occurred_at: datetime | None = None
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class CapacityStep:
    """A row of the capacity service's outbox: its commit order, its time and what it says."""

    position: int
    at: datetime
    type: str  # reflexe.v1.CapacityDeclared | reflexe.v1.OfferProposed
    had: str
    places: int = 0
    status: str = "OPEN"
    hold_id: str = ""
    hold_until: datetime | None = None


@dataclass(frozen=True)
class Receipt:
    """A webhook the receiver verified (before any deduplication)."""

    recipient: str  # had:<finess> | desk:<department>
    webhook_id: str
    type: str
    body: str  # the event as received: type, timestamp and data


@dataclass(frozen=True)
class LoggedDelivery:
    """A row of notify's delivery log."""

    webhook_id: str
    recipient: str
    status: str
    subscription_id: str = ""


@dataclass(frozen=True)
class Subscription:
    recipient: str
    created_at: datetime


@dataclass(frozen=True)
class ReferralRow:
    referral_id: str
    status: str


@dataclass(frozen=True)
class ClockRow:
    referral_id: str
    kind: str
    due_at: datetime


# ---- the figures -----------------------------------------------------------------------------


def lost(accepted: Iterable[Accepted], stored_referrals: set[str], requested_events: set[str],
         recorded_hl7: set[str]) -> list[str]:
    """Accepted, yet absent: a referral without its row or its committed ReferralRequested, an HL7
    message acknowledged AA that the gateway has not recorded."""
    missing = []
    for item in accepted:
        if item.door == "hl7":
            if item.key not in recorded_hl7:
                missing.append(f"hl7 {item.key}")
        elif item.key not in stored_referrals:
            missing.append(f"{item.door} {item.key}: no referral row")
        elif item.key not in requested_events:
            missing.append(f"{item.door} {item.key}: no ReferralRequested on the event log")
    return missing


def duplicated_records(events: Iterable[Event]) -> int:
    """Extra copies of an event id across the event topics."""
    counts = Counter(e.event_id for e in events)
    return sum(n - 1 for n in counts.values() if n > 1)


def release_times(referral_events: Iterable[Event]) -> dict[str, datetime]:
    """When the referral service released each hold (an offer's id is its hold's id): a decline,
    expiry, withdrawal or withdrawn acceptance, or the cancellation of a referral whose offer was
    open or accepted (not yet admitted). The earliest time counts."""
    released: dict[str, datetime] = {}
    live_offer: dict[str, str] = {}  # referral -> its offer holding a place, until released or admitted

    def release(offer_id: str, at: datetime) -> None:
        if offer_id and (offer_id not in released or at < released[offer_id]):
            released[offer_id] = at

    for e in sorted(referral_events, key=lambda e: (e.occurred_at, e.partition, e.offset)):
        if e.type == "reflexe.v1.OfferMade":
            live_offer[e.referral_id] = e.fields.get("offer_id", "")
        elif e.type in RELEASING:
            release(e.fields.get("offer_id", ""), e.occurred_at)
            if live_offer.get(e.referral_id) == e.fields.get("offer_id"):
                live_offer.pop(e.referral_id)
        elif e.type == "reflexe.v1.PatientAdmitted":
            live_offer.pop(e.referral_id, None)  # converted: it keeps its place
        elif e.type == "reflexe.v1.ReferralCancelled" and e.referral_id in live_offer:
            release(live_offer.pop(e.referral_id), e.occurred_at)
    return released


def double_booked(steps: Iterable[CapacityStep], released_at: dict[str, datetime],
                  accepted_at: dict[str, datetime]) -> list[str]:
    """Replays each HAD's declarations and holds in the capacity service's commit order. A hold
    counts against the declaration in force when it was placed (holds of an earlier declaration
    are the HAD's to count when it declares again) until the referral service released it, or its
    hold ran out unanswered. Each placement whose count exceeds the declaration's places, or that
    was made while the HAD was not OPEN, is a moment of double booking. A release is taken at the
    time the referral service committed it: the capacity service learns of it later, so a correct
    matcher can never be flagged."""
    moments = []
    by_had: dict[str, list[CapacityStep]] = defaultdict(list)
    for step in steps:
        by_had[step.had].append(step)
    for had, had_steps in by_had.items():
        declaration: CapacityStep | None = None
        holds: list[CapacityStep] = []
        for step in sorted(had_steps, key=lambda s: s.position):
            if step.type == "reflexe.v1.CapacityDeclared":
                declaration, holds = step, []
                continue
            if declaration is None:
                moments.append(f"{had}: hold {step.hold_id} placed with no declaration")
                continue
            if declaration.status != "OPEN":
                moments.append(f"{had}: hold {step.hold_id} placed while {declaration.status}")
            holds.append(step)
            live = [h for h in holds if _holding(h, step.at, released_at, accepted_at)]
            if len(live) > declaration.places:
                moments.append(f"{had}: {len(live)} places taken under a declaration of {declaration.places} "
                               f"at {step.at.isoformat()} (hold {step.hold_id})")
    return moments


def _holding(hold: CapacityStep, at: datetime, released_at: dict[str, datetime], accepted_at: dict[str, datetime]) -> bool:
    released = released_at.get(hold.hold_id)
    if released is not None and released <= at:
        return False
    # Unanswered by its end, a hold lapses then even if the expiry is recorded later.
    accepted = accepted_at.get(hold.hold_id)
    if hold.hold_until is not None and hold.hold_until <= at and (accepted is None or accepted > hold.hold_until):
        return False
    return True


def webhook_figures(receipts: Iterable[Receipt], logged: Iterable[LoggedDelivery],
                    expected: Iterable[tuple[str, str, str]]) -> tuple[list[str], list[str]]:
    """(undelivered, delivered twice). Undelivered: a webhook-id in notify's log never received,
    or an expected notification (recipient, type, the referral or offer id it must name) never
    received. Twice: one event (same type, timestamp and data) received by one recipient under
    two webhook-ids; a webhook-id received again is a retry, dropped by the receiver. Each pair says
    which cause notify's log shows: the recipient subscribed twice (two subscriptions), or the
    platform published two events for one (one subscription)."""
    receipts = list(receipts)
    received_ids = {r.webhook_id for r in receipts}
    undelivered = [f"{d.recipient} {d.webhook_id} ({d.status})" for d in logged if d.webhook_id not in received_ids]
    seen: set[tuple[str, str, str]] = set()
    ids_of_event: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in receipts:
        try:
            body = json.loads(r.body)
        except ValueError:
            body = {}
        data = body.get("data") or {}
        for key in ("offer_id", "referral_id"):
            if data.get(key):
                seen.add((r.recipient, r.type, str(data[key])))
        ids_of_event[(r.recipient, json.dumps(body, sort_keys=True))].add(r.webhook_id)
    undelivered += [f"{recipient} {kind} naming {key}: never received" for recipient, kind, key in expected
                    if (recipient, kind, key) not in seen]
    subscription_of = {d.webhook_id: d.subscription_id for d in logged if d.subscription_id}
    twice = [f"{recipient}: {sorted(ids)} ({_twice_cause({subscription_of.get(i) for i in ids} - {None})})"
             for (recipient, _), ids in ids_of_event.items() if len(ids) > 1]
    return undelivered, twice


def _twice_cause(subscriptions: set[str]) -> str:
    if len(subscriptions) > 1:
        return f"{len(subscriptions)} subscriptions of the recipient"
    if subscriptions:
        return "one subscription: two events published for one"
    return "not in notify's log"


def expected_notifications(referral_events: Iterable[Event], subscriptions: Iterable[Subscription]) -> list[tuple[str, str, str]]:
    """What the webhook contract (docs/webhooks.md) promises, from the event log: every offer made
    to an HAD reaches it as offer.proposed, every referral requested reaches its department's
    desk as referral.requested, for events after the recipient subscribed."""
    since = {s.recipient: s.created_at for s in subscriptions}
    wanted = []
    for e in referral_events:
        if e.type == "reflexe.v1.OfferMade":
            recipient = f"had:{e.fields.get('had_finess')}"
            if recipient in since and e.occurred_at >= since[recipient]:
                wanted.append((recipient, "offer.proposed", e.fields.get("offer_id", "")))
        elif e.type == "reflexe.v1.ReferralRequested":
            recipient = f"desk:{e.fields.get('department')}"
            if recipient in since and e.occurred_at >= since[recipient]:
                wanted.append((recipient, "referral.requested", e.referral_id))
    return wanted


def unexplained(referrals: Iterable[ReferralRow], referral_events: Iterable[Event], clocks: Iterable[ClockRow],
                now: datetime, grace: timedelta = timedelta(seconds=30)) -> list[str]:
    """Referrals neither closed nor explained once the run is quiet. Explained: waiting for people
    (admitted, accepted, incomplete), escalated to the desk with the escalation on the log, offered
    with the hold still running or its expiry clock pending. The rest is a search the platform
    left unfinished (REQUESTED with nothing pending), an offer whose clock never fired, or a
    clock overdue by more than `grace`."""
    events_of: dict[str, list[Event]] = defaultdict(list)
    for e in referral_events:
        events_of[e.referral_id].append(e)
    pending: dict[str, list[ClockRow]] = defaultdict(list)
    for c in clocks:
        pending[c.referral_id].append(c)
    found = []
    for r in referrals:
        overdue = [c for c in pending.get(r.referral_id, []) if c.due_at < now - grace]
        if overdue:
            found.append(f"{r.referral_id} {r.status}: clock {overdue[0].kind} due {overdue[0].due_at.isoformat()} never fired")
            continue
        if r.status in CLOSED or r.status in WAITING_FOR_PEOPLE:
            continue
        history = sorted(events_of.get(r.referral_id, []), key=lambda e: (e.occurred_at, e.offset))
        if r.status == "ESCALATED":
            if not any(e.type == "reflexe.v1.ReferralEscalated" for e in history):
                found.append(f"{r.referral_id} ESCALATED without a ReferralEscalated on the log")
        elif r.status == "OFFERED":
            offers = [e for e in history if e.type == "reflexe.v1.OfferMade"]
            hold_until = offers[-1].fields.get("hold_until") if offers else None
            running = hold_until is not None and hold_until > now
            clock = any(c.kind == "HOLD_EXPIRY" for c in pending.get(r.referral_id, []))
            if not (running or clock):
                found.append(f"{r.referral_id} OFFERED, hold ended {hold_until} with no expiry pending")
        else:  # REQUESTED, or a status this checker does not know
            found.append(f"{r.referral_id} {r.status}: the search ended with neither an offer nor an escalation")
    return found


def summary(figures: dict[str, Any]) -> str:
    """The run's one JSON line."""
    return json.dumps(figures, sort_keys=False, separators=(",", ":"))


def failed(figures: dict[str, Any]) -> list[str]:
    """The must-be-zero figures that are not, and a disagreement with the oracle."""
    bad = [name for name in MUST_BE_ZERO if figures.get(name) != 0]
    if figures.get("indicators_equal_oracle") is not True:
        bad.append("indicators_equal_oracle")
    return bad
