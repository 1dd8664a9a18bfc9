"""What an event contributes to the facts: pure functions, no I/O, shared by the live consumer
(one event per transaction) and the replay (thousands of events folded in memory per batch).

Facts are keyed (a referral, an offer, a declaration) and every column merges with a rule that
does not depend on arrival order, so late, out-of-order and redelivered events give the same
facts as the log read in order:

* ``first`` columns are set by one event only (the request, the offer): keep the first non-null;
* ``earliest`` groups are a time and its companions (``accepted_at`` + ``accepted_had``): the
  group of the earliest event wins as a whole (ties keep what is stored).

The evaluation before admission: an acceptance pending evaluation is the HAD's *answer* to its
offer (the offer's outcome ACCEPTED, ``pending_evaluation``), not yet the referral's acceptance;
the offer's evaluation ends when the HAD confirms or withdraws it (``evaluated_at``). The
referral's ``accepted_at`` is its plain acceptance or the confirmation of one pending evaluation,
so a withdrawn acceptance (the referral back in the search, then accepted by another HAD) never
stands as the referral's acceptance. The avis HAD a liaison nurse gives after posting is one row
per avis (an update is another avis), keyed by its referral and time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from google.protobuf.message import Message
from reflexe.v1 import capacity_pb2 as cpb
from reflexe.v1 import referral_pb2 as pb


@dataclass(frozen=True)
class FactTable:
    name: str
    key: tuple[str, ...]
    types: dict[str, str]  # column → PostgreSQL type, key first
    first: tuple[str, ...]  # COALESCE(stored, new)
    earliest: tuple[tuple[str, tuple[str, ...]], ...]  # (time column, companions)

    @property
    def columns(self) -> list[str]:
        return list(self.types)


REFERRALS = FactTable(
    "referral_facts", ("referral_id",),
    {"referral_id": "uuid", "department": "text", "source_kind": "text", "source_finess": "text",
     "place_of_care": "text", "requested_at": "timestamptz", "ed_arrival_at": "timestamptz",
     "urgency": "text", "planned_date": "date", "avis": "text",
     "ineligible_at": "timestamptz", "ineligible_reason": "text",
     "first_offer_at": "timestamptz", "first_offer_had": "text",
     "accepted_at": "timestamptz", "accepted_had": "text",
     "escalated_at": "timestamptz",
     "admitted_at": "timestamptz", "admitted_had": "text", "admitted_place": "text",
     "discharged_at": "timestamptz",
     "cancelled_at": "timestamptz", "cancel_reason": "text",
     "ed_exited_at": "timestamptz"},
    first=("department", "source_kind", "source_finess", "place_of_care", "requested_at", "ed_arrival_at",
           "urgency", "planned_date", "avis"),
    earliest=(("ineligible_at", ("ineligible_reason",)), ("first_offer_at", ("first_offer_had",)),
              ("accepted_at", ("accepted_had",)), ("escalated_at", ()),
              ("admitted_at", ("admitted_had", "admitted_place")), ("discharged_at", ()),
              ("cancelled_at", ("cancel_reason",)), ("ed_exited_at", ())),
)
OFFERS = FactTable(
    "offer_facts", ("offer_id",),
    {"offer_id": "text", "referral_id": "uuid", "department": "text", "had_finess": "text",
     "made_at": "timestamptz", "by_desk": "boolean", "outcome_at": "timestamptz", "outcome": "text", "reason": "text",
     "pending_evaluation": "boolean",
     "evaluated_at": "timestamptz", "evaluation": "text", "withdrawal_reason": "text"},
    first=("referral_id", "department", "had_finess", "made_at", "by_desk"),
    earliest=(("outcome_at", ("outcome", "reason", "pending_evaluation")),
              ("evaluated_at", ("evaluation", "withdrawal_reason"))),
)
DECLARATIONS = FactTable(
    "declaration_facts", ("had_finess", "declared_at"),
    {"had_finess": "text", "declared_at": "timestamptz", "department": "text", "authorised_places": "integer",
     "places_available": "integer", "status": "text", "active_patients": "integer"},
    first=("department", "authorised_places", "places_available", "status", "active_patients"),
    earliest=(),
)
AVIS_AFTER_POSTING = FactTable(
    "avis_facts", ("referral_id", "given_at"),
    {"referral_id": "uuid", "given_at": "timestamptz", "department": "text", "had_finess": "text",
     "avis": "text", "reason": "text"},
    first=("department", "had_finess", "avis", "reason"),
    earliest=(),
)
TABLES = (REFERRALS, OFFERS, DECLARATIONS, AVIS_AFTER_POSTING)

Delta = tuple[FactTable, dict[str, Any]]  # a partial row: key columns + what this event says


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _time(value) -> datetime | None:
    seconds, nanos = value.seconds, value.nanos
    if seconds == 0 and nanos == 0:
        return None
    return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)


def _planned_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None  # a malformed date counts as none: the referral is measured as urgent


def _avis(request) -> str | None:
    """The avis HAD the request carried: FAVOURABLE, UNFAVOURABLE, or None when it had none."""
    if not request.HasField("avis"):
        return None
    return "FAVOURABLE" if request.avis.eligible else "UNFAVOURABLE"


def _liaison_had(actor: str) -> str | None:
    """The HAD of the liaison nurse who gave an avis (actor ``liaison:<finess>``)."""
    kind, _, finess = actor.partition(":")
    return finess if kind == "liaison" and finess else None


def _declared(m: cpb.CapacityDeclared) -> list[Delta]:
    at = _time(m.declared_at)
    if not m.had_finess or at is None:
        return []
    return [(DECLARATIONS, {"had_finess": m.had_finess, "declared_at": at, "department": m.department or None,
                            "authorised_places": m.authorised_places, "places_available": m.places_available,
                            "status": m.status or None,
                            # The capacity service refuses a negative census: one here is no census.
                            "active_patients": m.active_patients if m.HasField("active_patients")
                            and m.active_patients >= 0 else None})]


def _requested(m: pb.ReferralRequested, ref: dict[str, Any], at: datetime | None) -> list[Delta]:
    r = m.request
    ref.update(source_kind=r.source.kind or None, source_finess=r.source.finess or None,
               place_of_care=r.patient.place_of_care or None, requested_at=_time(r.requested_at) or at,
               ed_arrival_at=_time(r.ed_arrival_at), urgency=r.clinical.urgency or None,
               planned_date=_planned_date(r.clinical.planned_date), avis=_avis(r))
    return [(REFERRALS, ref)]


def _ed_exit(m: pb.EdExitRecorded, ref: dict[str, Any], at: datetime | None) -> list[Delta]:
    # The hospital's exit time, not when it was recorded: the ED stay is measured with it.
    exited = _time(m.exited_at)
    if exited is None:
        return []
    ref["ed_exited_at"] = exited
    return [(REFERRALS, ref)]


def _ineligible(m, ref, at) -> list[Delta]:
    ref.update(ineligible_at=at, ineligible_reason=m.reason or "OTHER")
    return [(REFERRALS, ref)]


def _offer_made(m, ref, at) -> list[Delta]:
    ref.update(first_offer_at=at, first_offer_had=m.had_finess)
    return [(REFERRALS, ref), (OFFERS, {"offer_id": m.offer_id, "referral_id": ref["referral_id"],
                                        "department": ref["department"], "had_finess": m.had_finess,
                                        "made_at": at, "by_desk": m.by_desk})]


def _offer_answer(outcome: str):
    def answer(m, ref, at) -> list[Delta]:
        offer = {"offer_id": m.offer_id, "referral_id": ref["referral_id"], "department": ref["department"],
                 "had_finess": m.had_finess or None, "outcome_at": at, "outcome": outcome,
                 "reason": (m.reason or "OTHER") if outcome == "DECLINED" else None,
                 "pending_evaluation": m.pending_evaluation if outcome == "ACCEPTED" else None}
        if outcome == "ACCEPTED" and not m.pending_evaluation:
            ref.update(accepted_at=at, accepted_had=m.had_finess)
            return [(REFERRALS, ref), (OFFERS, offer)]
        return [(OFFERS, offer)]  # a pending acceptance is the HAD's answer, not yet the referral's acceptance
    return answer


def _evaluated(confirmed: bool):
    def evaluated(m, ref, at) -> list[Delta]:
        offer = {"offer_id": m.offer_id, "referral_id": ref["referral_id"], "department": ref["department"],
                 "had_finess": m.had_finess or None, "evaluated_at": at,
                 "evaluation": "CONFIRMED" if confirmed else "WITHDRAWN",
                 "withdrawal_reason": None if confirmed else (m.reason or "OTHER")}
        if confirmed:
            ref.update(accepted_at=at, accepted_had=m.had_finess)
            return [(REFERRALS, ref), (OFFERS, offer)]
        return [(OFFERS, offer)]
    return evaluated


def _avis_given(m, ref, at) -> list[Delta]:
    return [(AVIS_AFTER_POSTING, {"referral_id": ref["referral_id"], "given_at": at, "department": ref["department"],
                                  "had_finess": _liaison_had(m.header.actor),
                                  "avis": "FAVOURABLE" if m.eligible else "UNFAVOURABLE",
                                  "reason": None if m.eligible else (m.reason or "OTHER")})]


def _escalated(m, ref, at) -> list[Delta]:
    ref["escalated_at"] = at
    return [(REFERRALS, ref)]


def _admitted(m, ref, at) -> list[Delta]:
    ref.update(admitted_at=at, admitted_had=m.had_finess, admitted_place=m.place_of_care or None)
    return [(REFERRALS, ref)]


def _discharged(m, ref, at) -> list[Delta]:
    ref["discharged_at"] = at
    return [(REFERRALS, ref)]


def _cancelled(m, ref, at) -> list[Delta]:
    ref.update(cancelled_at=at, cancel_reason=m.reason or "OTHER")
    return [(REFERRALS, ref)]


# What each referral event contributes, by its exact class: one lookup per event instead of a chain
# of isinstance checks, which protobuf classes answer through the ABC machinery (the replay folds
# about a million events). The flag says whether the event is folded without an event time.
_REFERRAL_FOLDS = {
    pb.ReferralRequested: (_requested, True),
    pb.EdExitRecorded: (_ed_exit, True),
    pb.ReferralDeclaredIneligible: (_ineligible, False),
    pb.OfferMade: (_offer_made, False),
    pb.OfferAccepted: (_offer_answer("ACCEPTED"), False),
    pb.OfferDeclined: (_offer_answer("DECLINED"), False),
    pb.OfferExpired: (_offer_answer("EXPIRED"), False),
    pb.OfferWithdrawn: (_offer_answer("WITHDRAWN"), False),
    pb.EvaluationConfirmed: (_evaluated(True), False),
    pb.AcceptanceWithdrawn: (_evaluated(False), False),
    pb.AvisGiven: (_avis_given, False),
    pb.ReferralEscalated: (_escalated, False),
    pb.PatientAdmitted: (_admitted, False),
    pb.PatientDischarged: (_discharged, False),
    pb.ReferralCancelled: (_cancelled, False),
}


# The event types the fold reads, by their CloudEvents type (the message's full name): a replay
# skips every other record without parsing its payload (alerts, consents, audit...).
FOLDED_TYPES: frozenset[str] = frozenset(
    cls.DESCRIPTOR.full_name for cls in (cpb.CapacityDeclared, *_REFERRAL_FOLDS))


def fold(m: Message) -> list[Delta]:
    """The partial facts one event carries (empty for events that feed no indicator)."""
    cls = type(m)
    if cls is cpb.CapacityDeclared:
        return _declared(m)
    entry = _REFERRAL_FOLDS.get(cls)
    if entry is None:
        return []
    header = m.header
    rid = header.referral_id  # text; PostgreSQL casts it to uuid (and rejects a malformed one)
    if len(rid) != 36:
        return []  # no referral or a malformed id: nothing to fold
    at = _time(header.occurred_at)
    contribute, without_time = entry
    if at is None and not without_time:
        return []
    return contribute(m, {"referral_id": rid, "department": header.department or None}, at)


def merge_into(table: FactTable, stored: dict[str, Any], new: dict[str, Any]) -> None:
    """The in-memory twin of the SQL upsert (adapters.store.upsert_sql), same rules: `new`
    merged into `stored`, in place."""
    for c in table.first:
        if stored.get(c) is None:
            stored[c] = new.get(c)
    for t, companions in table.earliest:
        nt = new.get(t)
        if nt is not None:
            st = stored.get(t)
            if st is None or nt < st:
                stored[t] = nt
                for c in companions:
                    stored[c] = new.get(c)


def merge(table: FactTable, stored: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`stored` and `new` merged into a new row."""
    out = dict(stored)
    merge_into(table, out, new)
    return out


class Batch:
    """Deltas folded in memory, one merged row per key (what the replay upserts per batch). The
    batch owns the deltas it is given: the first one of a key becomes its row, merged in place."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[tuple, dict[str, Any]]] = {t.name: {} for t in TABLES}
        self._tables = {t.name: (self.rows[t.name], t.key) for t in TABLES}
        self.events = 0

    def add(self, deltas: list[Delta]) -> None:
        self.events += 1
        for table, row in deltas:
            rows, key_columns = self._tables[table.name]
            key = (row[key_columns[0]],) if len(key_columns) == 1 else tuple(row[k] for k in key_columns)
            stored = rows.get(key)
            if stored is None:
                rows[key] = row
            else:
                merge_into(table, stored, row)
