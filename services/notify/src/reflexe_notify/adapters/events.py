"""Kafka events (reflexe.v1 protobuf) → notices, with the data of docs/webhooks.md.

Only pseudonymous ids travel: the request's patient block is never copied."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import Message
from reflexe.v1 import capacity_pb2, matching_pb2, referral_pb2

from reflexe_common.envelope import Envelope, dt
from reflexe_notify.domain.desk import DeskEvent
from reflexe_notify.domain.notices import Notice
from reflexe_notify.domain.routing import EventKind as K

_OFFER_ANSWERS = {
    referral_pb2.OfferAccepted: K.OFFER_ACCEPTED,
    referral_pb2.OfferDeclined: K.OFFER_DECLINED,
    referral_pb2.OfferExpired: K.OFFER_EXPIRED,
    referral_pb2.OfferUnanswered: K.OFFER_UNANSWERED,
    referral_pb2.EvaluationConfirmed: K.EVALUATION_CONFIRMED,
    referral_pb2.AcceptanceWithdrawn: K.ACCEPTANCE_WITHDRAWN,
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def notice_from(envelope: Envelope) -> Notice | None:
    """The notice an event calls for, or None for events nobody is notified of."""
    m: Message = envelope.message
    if isinstance(m, matching_pb2.OfferProposed):
        return Notice(K.OFFER_PROPOSED, m.department, dt(m.occurred_at) or envelope.time, {
            "referral_id": m.referral_id, "department": m.department, "offer_id": m.offer_id,
            "had_finess": m.had_finess, "hold_until": _iso(dt(m.hold_until)), "explanation": m.explanation,
            "by_desk": m.by_desk,
        }, m.referral_id, m.had_finess)
    if isinstance(m, matching_pb2.MatchExhausted):
        # Without by_desk the referral service turns it into a ReferralEscalated, notified
        # below; a desk's own choice failing is not escalated again, so it is told from here.
        if not m.by_desk:
            return None
        return Notice(K.REFERRAL_ESCALATED, m.department, dt(m.occurred_at) or envelope.time, {
            "referral_id": m.referral_id, "department": m.department, "why": m.explanation,
        }, m.referral_id)
    if not hasattr(m, "header"):
        return None
    header = m.header
    at = dt(header.occurred_at) or envelope.time
    common = {"referral_id": header.referral_id, "department": header.department}

    def notice(kind: K, concerned_had: str | None = None, **data) -> Notice:
        return Notice(kind, header.department, at, {**common, **data}, header.referral_id, concerned_had)

    kind = _OFFER_ANSWERS.get(type(m))
    if kind is not None:
        extra: dict = {}
        if isinstance(m, (referral_pb2.OfferDeclined, referral_pb2.AcceptanceWithdrawn)):
            extra["reason"] = m.reason
        if isinstance(m, referral_pb2.OfferAccepted):
            extra["pending_evaluation"] = m.pending_evaluation
        return notice(kind, m.had_finess, offer_id=m.offer_id, had_finess=m.had_finess, **extra)
    if isinstance(m, referral_pb2.OfferWithdrawn):
        # The matcher's offer reached the HAD (offer.proposed) before the referral refused it.
        return notice(K.OFFER_WITHDRAWN, m.had_finess, offer_id=m.offer_id, had_finess=m.had_finess, why=m.why)
    if isinstance(m, referral_pb2.ReferralRequested):
        return notice(K.REFERRAL_REQUESTED, source_kind=m.request.source.kind,
                      main_mpp=m.request.clinical.main_mpp, urgency=m.request.clinical.urgency)
    if isinstance(m, referral_pb2.ReferralEscalated):
        return notice(K.REFERRAL_ESCALATED, why=m.why)
    if isinstance(m, referral_pb2.PatientAdmitted):
        return notice(K.REFERRAL_ADMITTED, m.had_finess, had_finess=m.had_finess)
    if isinstance(m, referral_pb2.ReferralCancelled):
        return notice(K.REFERRAL_CANCELLED, reason=m.reason)
    if isinstance(m, referral_pb2.AdmissionOverdue):
        return notice(K.ADMISSION_OVERDUE, due_at=_iso(dt(m.due_at)), planned_date=m.planned_date or None)
    return None


# ---------------------------------------------------------------- the desks' live stream

_DESK_ONLY = {  # referral events the desk page follows beyond those notified
    referral_pb2.OfferWithdrawn: "offer.withdrawn",
    referral_pb2.SearchWidened: "referral.widened",
    referral_pb2.DeskOfferRequested: "referral.desk_offer",
    referral_pb2.PatientDischarged: "referral.discharged",
    referral_pb2.ReferralDeclaredIneligible: "referral.ineligible",
    referral_pb2.ReferralCompleted: "referral.completed",
    referral_pb2.AvisGiven: "referral.avis",
}


def other_desks_named(envelope: Envelope) -> tuple[str, ...]:
    """The departments beyond the record's own whose desks an event names: every department a
    multi-department HAD serves (its capacity), those a search is widened to."""
    m: Message = envelope.message
    if isinstance(m, (capacity_pb2.LivePlacesChanged, capacity_pb2.CapacityDeclared, referral_pb2.SearchWidened)):
        return tuple(m.departments)
    return ()


def desk_event_from(envelope: Envelope) -> DeskEvent | None:
    """The entry of a department's live stream an event makes, or None.

    The stream follows the referral service's own events (not the matcher's OfferProposed): they
    are committed in its database before they reach Kafka, so a desk page refreshing its queue on
    a stream entry always finds the referral service already showing it."""
    m: Message = envelope.message
    if isinstance(m, (capacity_pb2.LivePlacesChanged, capacity_pb2.CapacityDeclared)):
        at = dt(m.occurred_at if isinstance(m, capacity_pb2.LivePlacesChanged) else m.declared_at) or envelope.time
        live = m.live_places if isinstance(m, capacity_pb2.LivePlacesChanged) else None
        declared = m.declared_places if isinstance(m, capacity_pb2.LivePlacesChanged) else m.places_available
        return DeskEvent(m.department, envelope.id, "capacity.changed", at, {
            "had_finess": m.had_finess, "department": m.department, "live_places": live,
            "declared_places": declared, "status": m.status, "authorised_places": m.authorised_places,
        })
    if isinstance(m, matching_pb2.OfferProposed):
        return None  # told by the referral service's OfferMade
    if isinstance(m, referral_pb2.OfferMade):
        h = m.header
        return DeskEvent(h.department, envelope.id, str(K.OFFER_PROPOSED), dt(h.occurred_at) or envelope.time, {
            "referral_id": h.referral_id, "department": h.department, "offer_id": m.offer_id,
            "had_finess": m.had_finess, "hold_until": _iso(dt(m.hold_until)), "explanation": m.explanation,
            "by_desk": m.by_desk,
        })
    kind = _DESK_ONLY.get(type(m))
    if kind is not None:
        h = m.header
        data: dict = {"referral_id": h.referral_id, "department": h.department}
        for name in ("offer_id", "had_finess", "why", "reason", "eligible"):
            if hasattr(m, name):
                data[name] = getattr(m, name)
        if isinstance(m, referral_pb2.SearchWidened):
            data["departments"] = list(m.departments)
        return DeskEvent(h.department, envelope.id, kind, dt(h.occurred_at) or envelope.time, data)
    notice = notice_from(envelope)
    if notice is None:
        return None
    return DeskEvent(notice.department, envelope.id, str(notice.kind), notice.occurred_at, notice.data)
