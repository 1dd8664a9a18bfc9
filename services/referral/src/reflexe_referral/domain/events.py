"""What happened to a referral. The state of a referral is a fold of these.

Every event names its referral, when it happened (timezone-aware) and who acted:
"hospital:<finess>", "ehpad:<finess>", "gp:<finess>", "had:<finess>", "desk:<department>"
or "system" (matcher, clocks). Fields are keyword-only so the shared ones can come first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Union

from reflexe_common.vocabulary import Reason

from .values import Conditions, ReferralRequest

SYSTEM = "system"


@dataclass(frozen=True, kw_only=True)
class _ReferralEvent:
    referral_id: str
    occurred_at: datetime
    actor: str | None = None

    def __post_init__(self) -> None:
        # Delays are the platform's key indicator: a naive time would silently shift them.
        if self.occurred_at.utcoffset() is None:
            raise ValueError(f"{type(self).__name__}.occurred_at must carry a time zone")


@dataclass(frozen=True, kw_only=True)
class ReferralRequested(_ReferralEvent):
    request: ReferralRequest
    # The conditions the request lacks, as decided when it was made (docs/domain.md, "Consents
    # as conditions"): kept in the event so a history folds the same whatever the rule becomes.
    missing_conditions: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ReferralRequestUpdated(_ReferralEvent):
    """The source updated the request: the conditions as they are now, what changed, what is
    still missing."""

    conditions: Conditions
    changed_fields: tuple[str, ...]
    missing_conditions: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class ReferralCompleted(_ReferralEvent):
    """An INCOMPLETE referral got its last missing condition: the matcher takes it from here."""


@dataclass(frozen=True, kw_only=True)
class ReferralDeclaredIneligible(_ReferralEvent):
    reason: Reason
    text: str


@dataclass(frozen=True, kw_only=True)
class OfferMade(_ReferralEvent):
    offer_id: str
    had_finess: str
    hold_until: datetime
    explanation: str  # why this HAD, in words the desk and the HAD can read
    by_desk: bool
    explanation_json: str = ""  # the matcher's structured ranking, kept for audit


@dataclass(frozen=True, kw_only=True)
class OfferAccepted(_ReferralEvent):
    offer_id: str
    had_finess: str
    # Subject to the liaison nurse's evaluation visit: confirmed or withdrawn later.
    pending_evaluation: bool = False


@dataclass(frozen=True, kw_only=True)
class EvaluationConfirmed(_ReferralEvent):
    """The HAD confirms an acceptance given pending evaluation."""

    offer_id: str
    had_finess: str


@dataclass(frozen=True, kw_only=True)
class AcceptanceWithdrawn(_ReferralEvent):
    """The HAD withdraws an acceptance given pending evaluation: back to the search."""

    offer_id: str
    had_finess: str
    reason: Reason
    text: str


@dataclass(frozen=True, kw_only=True)
class AvisGiven(_ReferralEvent):
    """A liaison nurse gave or updated the avis HAD after the referral was posted."""

    eligible: bool
    reason: Reason | None
    text: str


@dataclass(frozen=True, kw_only=True)
class OfferDeclined(_ReferralEvent):
    offer_id: str
    had_finess: str
    reason: Reason
    text: str


@dataclass(frozen=True, kw_only=True)
class OfferExpired(_ReferralEvent):
    offer_id: str
    had_finess: str


@dataclass(frozen=True, kw_only=True)
class OfferWithdrawn(_ReferralEvent):
    """The matcher held a place for a referral that can no longer take an offer.

    The offer never reached the HAD; this event only tells capacity to release the hold.
    """

    offer_id: str
    had_finess: str
    why: str


@dataclass(frozen=True, kw_only=True)
class ReferralEscalated(_ReferralEvent):
    why: str


@dataclass(frozen=True, kw_only=True)
class SearchWidened(_ReferralEvent):
    departments: tuple[str, ...]  # only the newly added ones


@dataclass(frozen=True, kw_only=True)
class DeskOfferRequested(_ReferralEvent):
    had_finess: str


@dataclass(frozen=True, kw_only=True)
class PatientAdmitted(_ReferralEvent):
    had_finess: str


@dataclass(frozen=True, kw_only=True)
class PatientDischarged(_ReferralEvent):
    had_finess: str


@dataclass(frozen=True, kw_only=True)
class ReferralCancelled(_ReferralEvent):
    reason: Reason
    text: str


@dataclass(frozen=True, kw_only=True)
class OfferUnanswered(_ReferralEvent):
    """Clock: the HAD has not answered some minutes after the offer (notify it again)."""

    offer_id: str
    had_finess: str


@dataclass(frozen=True, kw_only=True)
class AdmissionOverdue(_ReferralEvent):
    """Clock: the patient is not admitted by `due_at` (the target missed): 24 h after the request,
    or the end of the planned day (`planned_date`) for a planned referral."""

    due_at: datetime | None = None  # None: signalled before the event carried it (24 h target)
    planned_date: date | None = None


@dataclass(frozen=True, kw_only=True)
class EdExitRecorded(_ReferralEvent):
    """The referring hospital reported the patient left its ED (HL7 A03 via the gateway);
    occurred_at is when it was recorded, exited_at when the hospital dates the exit."""

    exited_at: datetime

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.exited_at.utcoffset() is None:
            raise ValueError("EdExitRecorded.exited_at must carry a time zone")


Event = Union[
    ReferralRequested,
    ReferralDeclaredIneligible,
    OfferMade,
    OfferAccepted,
    EvaluationConfirmed,
    AcceptanceWithdrawn,
    AvisGiven,
    OfferDeclined,
    OfferExpired,
    OfferWithdrawn,
    ReferralEscalated,
    SearchWidened,
    DeskOfferRequested,
    PatientAdmitted,
    PatientDischarged,
    ReferralCancelled,
    OfferUnanswered,
    AdmissionOverdue,
    EdExitRecorded,
    ReferralRequestUpdated,
    ReferralCompleted,
]
