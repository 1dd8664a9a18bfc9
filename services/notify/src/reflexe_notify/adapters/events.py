"""Kafka events (reflexe.v1 protobuf) → notices, with the data of docs/webhooks.md.

Only pseudonymous ids travel: the request's patient block is never copied."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import Message
from reflexe.v1 import matching_pb2, referral_pb2

from reflexe_common.envelope import Envelope, dt
from reflexe_notify.domain.notices import Notice
from reflexe_notify.domain.routing import EventKind as K

_OFFER_ANSWERS = {
    referral_pb2.OfferAccepted: K.OFFER_ACCEPTED,
    referral_pb2.OfferDeclined: K.OFFER_DECLINED,
    referral_pb2.OfferExpired: K.OFFER_EXPIRED,
    referral_pb2.OfferUnanswered: K.OFFER_UNANSWERED,
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
        extra = {"reason": m.reason} if isinstance(m, referral_pb2.OfferDeclined) else {}
        return notice(kind, m.had_finess, offer_id=m.offer_id, had_finess=m.had_finess, **extra)
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
        return notice(K.ADMISSION_OVERDUE)
    return None
