"""Which recipients hear of which event kind (the table of docs/webhooks.md)."""

from __future__ import annotations

from enum import StrEnum

from reflexe_notify.domain.recipients import Recipient


class EventKind(StrEnum):
    """The `type` of a webhook body."""

    OFFER_PROPOSED = "offer.proposed"
    OFFER_UNANSWERED = "offer.unanswered"
    OFFER_ACCEPTED = "offer.accepted"
    OFFER_DECLINED = "offer.declined"
    OFFER_EXPIRED = "offer.expired"
    REFERRAL_REQUESTED = "referral.requested"
    REFERRAL_ESCALATED = "referral.escalated"
    REFERRAL_ADMITTED = "referral.admitted"
    REFERRAL_CANCELLED = "referral.cancelled"
    ADMISSION_OVERDUE = "admission.overdue"
    DELIVERY_FAILED = "delivery.failed"


_TO_HAD = {EventKind.OFFER_PROPOSED, EventKind.OFFER_UNANSWERED}
_TO_SOURCE_HOSPITAL = {
    EventKind.OFFER_ACCEPTED, EventKind.OFFER_DECLINED, EventKind.OFFER_EXPIRED,
    EventKind.REFERRAL_ADMITTED, EventKind.REFERRAL_CANCELLED,
}


def recipients_for(kind: EventKind, department: str, had_finess: str | None = None,
                   source_finess: str | None = None) -> list[Recipient]:
    """Every event goes to the department's desk; some also to the HAD or the source hospital.

    The source hospital is left out when unknown (its ReferralRequested was never seen)."""
    recipients = [Recipient.desk(department)]
    if kind in _TO_HAD and had_finess:
        recipients.append(Recipient.had(had_finess))
    if kind in _TO_SOURCE_HOSPITAL and source_finess:
        recipients.append(Recipient.hospital(source_finess))
    return recipients
