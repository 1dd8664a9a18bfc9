"""Which recipients hear of which event kind (the table of docs/webhooks.md)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from reflexe_notify.domain.recipients import Recipient


class EventKind(StrEnum):
    """The `type` of a webhook body."""

    OFFER_PROPOSED = "offer.proposed"
    OFFER_UNANSWERED = "offer.unanswered"
    OFFER_ACCEPTED = "offer.accepted"
    OFFER_DECLINED = "offer.declined"
    OFFER_EXPIRED = "offer.expired"
    OFFER_WITHDRAWN = "offer.withdrawn"
    EVALUATION_CONFIRMED = "offer.evaluation_confirmed"
    ACCEPTANCE_WITHDRAWN = "offer.acceptance_withdrawn"
    REFERRAL_REQUESTED = "referral.requested"
    REFERRAL_ESCALATED = "referral.escalated"
    REFERRAL_ADMITTED = "referral.admitted"
    REFERRAL_CANCELLED = "referral.cancelled"
    ADMISSION_OVERDUE = "admission.overdue"
    DELIVERY_FAILED = "delivery.failed"


class HadAudience(StrEnum):
    """Which HADs hear of an event."""

    NAMED = "named"  # the HAD the event names: its own offer
    CONCERNED = "concerned"  # every HAD whose offer is open or whose acceptance stands on the referral


# An HAD must know when what it holds a place or a team for changes: an offer made to it, left
# unanswered, expired or withdrawn, and the referral it was offered or accepted cancelled. A new
# event concerning HADs needs only its line here.
HAD_AUDIENCE: dict[EventKind, HadAudience] = {
    EventKind.OFFER_PROPOSED: HadAudience.NAMED,
    EventKind.OFFER_UNANSWERED: HadAudience.NAMED,
    EventKind.OFFER_EXPIRED: HadAudience.NAMED,
    EventKind.OFFER_WITHDRAWN: HadAudience.NAMED,
    EventKind.ACCEPTANCE_WITHDRAWN: HadAudience.NAMED,
    EventKind.REFERRAL_CANCELLED: HadAudience.CONCERNED,
}
_TO_SOURCE_HOSPITAL = {
    EventKind.OFFER_ACCEPTED, EventKind.OFFER_DECLINED, EventKind.OFFER_EXPIRED,
    EventKind.EVALUATION_CONFIRMED, EventKind.ACCEPTANCE_WITHDRAWN,
    EventKind.REFERRAL_ADMITTED, EventKind.REFERRAL_CANCELLED,
}


def had_audience(kind: EventKind) -> HadAudience | None:
    return HAD_AUDIENCE.get(kind)


def hads_told(kind: EventKind, named_had: str | None, concerned_hads: Iterable[str] = ()) -> list[str]:
    """The FINESS of the HADs an event of this kind is told to: the one it names, or those the
    referral concerns (known to the caller: they are stored, not in the event)."""
    match had_audience(kind):
        case HadAudience.NAMED:
            return [named_had] if named_had else []
        case HadAudience.CONCERNED:
            return list(dict.fromkeys(concerned_hads))
    return []


def recipients_for(kind: EventKind, department: str, had_finess: str | None = None,
                   source_finess: str | None = None, concerned_hads: Iterable[str] = ()) -> list[Recipient]:
    """Every event goes to the department's desk; some also to HADs or the source hospital.

    The source hospital is left out when unknown (its ReferralRequested was never seen)."""
    recipients = [Recipient.desk(department)]
    recipients += [Recipient.had(finess) for finess in hads_told(kind, had_finess, concerned_hads)]
    if kind in _TO_SOURCE_HOSPITAL and source_finess:
        recipients.append(Recipient.hospital(source_finess))
    return recipients
