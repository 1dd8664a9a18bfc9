"""The referral aggregate: a lifecycle folded from events.

    INCOMPLETE ──(consents given by an update)──┐
                                                ▼
    REQUESTED ──► OFFERED(HAD x, hold until T) ──► ACCEPTED(by x) ──► ADMITTED ──► DISCHARGED
        │   ▲          │ declined / hold expired: back to REQUESTED, the matcher cascades
        │   ├──────────┘
        │   └── ACCEPTED pending evaluation, withdrawn (confirmed: stays ACCEPTED)
        ├──► ESCALATED (no HAD can take it: the desk widens the search or picks an HAD)
        └──► INELIGIBLE (negative avis HAD)        any state before ADMITTED ──► CANCELLED

Decisions (`accept`, `decline`, ...) check the rules against the current state and return
the events to append; they never mutate. `apply` is the only state change and is strict:
an event that does not fit the state means a corrupt history, not a user error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from reflexe_common.geography import end_of_local_day
from reflexe_common.vocabulary import Reason, SourceKind, Urgency

from .errors import ErrorCode, IllegalTransition, InconsistentHistory, InvalidRequest, StaleVersion
from .events import (
    SYSTEM,
    AcceptanceWithdrawn,
    AdmissionOverdue,
    AvisGiven,
    DeskOfferRequested,
    EvaluationConfirmed,
    EdExitRecorded,
    Event,
    OfferAccepted,
    OfferDeclined,
    OfferExpired,
    OfferMade,
    OfferUnanswered,
    OfferWithdrawn,
    PatientAdmitted,
    PatientDischarged,
    ReferralCancelled,
    ReferralDeclaredIneligible,
    ReferralCompleted,
    ReferralEscalated,
    ReferralRequested,
    ReferralRequestUpdated,
    SearchWidened,
)
from .values import AvisHad, Conditions, ReferralRequest, Source

ADMISSION_TARGET = timedelta(hours=24)  # the réflexe HAD target: admitted within 24 h
DEFAULT_UNANSWERED_AFTER = timedelta(minutes=15)


class Status(StrEnum):
    INCOMPLETE = "INCOMPLETE"  # waits for patient consent or GP agreement: not matched
    REQUESTED = "REQUESTED"
    INELIGIBLE = "INELIGIBLE"
    OFFERED = "OFFERED"
    ACCEPTED = "ACCEPTED"
    ESCALATED = "ESCALATED"
    ADMITTED = "ADMITTED"
    DISCHARGED = "DISCHARGED"
    CANCELLED = "CANCELLED"


CLOSED_STATUSES = frozenset({Status.INELIGIBLE, Status.CANCELLED, Status.DISCHARGED})
# Where the source may still update its request: before an HAD has accepted (docs/domain.md).
UPDATABLE_STATUSES = frozenset({Status.INCOMPLETE, Status.REQUESTED, Status.ESCALATED, Status.OFFERED})
# Where the search for an HAD is still going on: an offer, a widening or a desk pick fits.
SEARCHING_STATUSES = frozenset({Status.REQUESTED, Status.ESCALATED})
# Where no HAD holds a place: an unfavourable avis HAD closes the referral there.
NO_PLACE_HELD_STATUSES = SEARCHING_STATUSES | {Status.INCOMPLETE}

# The lifecycle graph: status changes one event may cause (events that keep the status,
# e.g. clock signals or a desk pick, are always allowed and not listed).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.INCOMPLETE: frozenset({Status.REQUESTED, Status.INELIGIBLE, Status.CANCELLED}),
    Status.REQUESTED: frozenset(
        {Status.OFFERED, Status.ESCALATED, Status.INELIGIBLE, Status.CANCELLED}
    ),
    Status.ESCALATED: frozenset(
        {Status.OFFERED, Status.REQUESTED, Status.INELIGIBLE, Status.CANCELLED}
    ),
    Status.OFFERED: frozenset({Status.ACCEPTED, Status.REQUESTED, Status.CANCELLED}),
    # Back to REQUESTED: an acceptance given pending evaluation, withdrawn.
    Status.ACCEPTED: frozenset({Status.ADMITTED, Status.REQUESTED, Status.CANCELLED}),
    Status.ADMITTED: frozenset({Status.DISCHARGED}),
    Status.INELIGIBLE: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.DISCHARGED: frozenset(),
}


class ClockKind(StrEnum):
    HOLD_EXPIRY = "HOLD_EXPIRY"
    OFFER_UNANSWERED = "OFFER_UNANSWERED"
    ADMISSION_OVERDUE = "ADMISSION_OVERDUE"


@dataclass(frozen=True)
class Clock:
    """A durable timer the service layer must keep; firing it calls the matching decision."""

    kind: str
    due_at: datetime
    offer_id: str | None


@dataclass(frozen=True)
class Offer:
    offer_id: str
    had_finess: str
    hold_until: datetime
    made_at: datetime
    explanation: str
    by_desk: bool
    unanswered_signalled: bool = False


_SOURCE_ACTOR_PREFIX = {
    SourceKind.ED: "hospital",
    SourceKind.UHCD: "hospital",
    SourceKind.WARD: "hospital",
    SourceKind.EHPAD: "ehpad",
    SourceKind.GP: "gp",
}


def end_of_planned_day(planned: date, department: str) -> datetime:
    """When a planned admission stops being on time: the midnight ending the planned day on the
    clock of the department (docs/domain.md, "Planned referrals"; overseas departments on theirs)."""
    return end_of_local_day(planned, department)


def admission_due_at(request: ReferralRequest) -> datetime:
    """When the patient should be admitted at the latest: 24 h after the request, or for a planned
    referral the end of its planned day. A PLANNED request without a date is refused at the door;
    one found in an older history is held to the 24-hour target, so it never escapes the alarm."""
    clinical = request.clinical
    if clinical.urgency is Urgency.PLANNED and clinical.planned_date is not None:
        return end_of_planned_day(clinical.planned_date, request.department)
    return request.requested_at + ADMISSION_TARGET


def source_actor(source: Source) -> str:
    return f"{_SOURCE_ACTOR_PREFIX[source.kind]}:{source.finess}"


def had_actor(had_finess: str) -> str:
    return f"had:{had_finess}"


def liaison_actor(had_finess: str) -> str:
    return f"liaison:{had_finess}"


def desk_actor(department: str) -> str:
    return f"desk:{department}"


class _DecisionOnClassDataOnInstance:
    """`Referral.request(req, at)` is the decision opening a referral, while
    `referral.request` reads the request a referral was opened with: both read naturally
    at their call sites, so one name serves both, resolved by how it is reached."""

    def __init__(self, decision: Callable[[ReferralRequest, datetime], list[Event]]) -> None:
        self._decision = decision
        self.__doc__ = decision.__doc__

    def __get__(self, referral: Referral | None, owner: type) -> Any:
        return self._decision if referral is None else referral.data


@dataclass
class Referral:
    """State of one referral. Build it with `from_events`; only `apply` changes it."""

    data: ReferralRequest  # the minimal data set; read it as `referral.request` too
    departments: tuple[str, ...]  # searched: own department first, then widened ones
    status: Status = Status.REQUESTED
    current_offer: Offer | None = None
    tried_hads: frozenset[str] = frozenset()  # offered at least once, whatever the outcome
    # Every offer id ever seen -> its HAD, withdrawn ones included: makes offers idempotent
    # and lets an HAD be told an offer was not addressed to it.
    offer_hads: dict[str, str] = field(default_factory=dict)
    accepted_had: str | None = None
    accepted_offer_id: str | None = None
    # The acceptance awaits the liaison nurse's evaluation visit (confirm or withdraw).
    evaluation_pending: bool = False
    evaluation_confirmed: bool = False  # the standing acceptance was confirmed after the evaluation
    avis: AvisHad | None = None  # the latest avis HAD: the request's, then a liaison nurse's
    admitted_had: str | None = None
    last_decline_reason: Reason | None = None
    closed_reason: Reason | None = None  # why INELIGIBLE or CANCELLED
    first_offer_at: datetime | None = None
    accepted_at: datetime | None = None
    admitted_at: datetime | None = None
    discharged_at: datetime | None = None
    closed_at: datetime | None = None
    admission_overdue_signalled: bool = False
    ed_exited_at: datetime | None = None  # the referring hospital's report (HL7 A03)
    missing_conditions: tuple[str, ...] = ()  # what keeps it INCOMPLETE
    version: int = 1  # events applied, for optimistic concurrency

    # ---- folding -------------------------------------------------------------------

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Referral:
        stream = iter(events)
        first = next(stream, None)
        if not isinstance(first, ReferralRequested):
            raise InconsistentHistory("a referral's history starts with ReferralRequested")
        if first.referral_id != first.request.referral_id:
            raise InconsistentHistory("ReferralRequested names another referral")
        referral = cls(data=first.request, departments=(first.request.department,),
                       avis=first.request.avis)
        if first.missing_conditions:
            referral.status = Status.INCOMPLETE
            referral.missing_conditions = first.missing_conditions
        for event in stream:
            referral.apply(event)
        return referral

    def apply(self, event: Event) -> None:
        if event.referral_id != self.referral_id:
            raise InconsistentHistory(
                f"event for {event.referral_id} applied to {self.referral_id}"
            )
        at = event.occurred_at
        match event:
            case ReferralDeclaredIneligible():
                # Emitted with the request, from the avis it carried, or with an unfavourable
                # avis a liaison nurse gave while the search was going on (no place held).
                self._expect(self.version == 1 or self.status in NO_PLACE_HELD_STATUSES, event)
                self._close(Status.INELIGIBLE, event.reason, at)
            case AvisGiven():
                self._expect(self._awaiting_admission, event)
                self.avis = AvisHad(event.eligible, event.reason, event.text)
            case OfferMade():
                self._expect(
                    self.status in SEARCHING_STATUSES and event.offer_id not in self.offer_hads,
                    event,
                )
                self.status = Status.OFFERED
                self.current_offer = Offer(
                    offer_id=event.offer_id,
                    had_finess=event.had_finess,
                    hold_until=event.hold_until,
                    made_at=at,
                    explanation=event.explanation,
                    by_desk=event.by_desk,
                )
                self.offer_hads = {**self.offer_hads, event.offer_id: event.had_finess}
                self.tried_hads = self.tried_hads | {event.had_finess}
                self.first_offer_at = self.first_offer_at or at
            case OfferAccepted():
                self._expect_current_offer(event, event.offer_id, event.had_finess)
                self.status = Status.ACCEPTED
                self.current_offer = None
                self.accepted_had, self.accepted_at = event.had_finess, at
                self.accepted_offer_id = event.offer_id
                self.evaluation_pending, self.evaluation_confirmed = event.pending_evaluation, False
            case EvaluationConfirmed():
                self._expect_pending_acceptance(event, event.offer_id, event.had_finess)
                self.evaluation_pending, self.evaluation_confirmed = False, True
            case AcceptanceWithdrawn():
                self._expect_pending_acceptance(event, event.offer_id, event.had_finess)
                self.status, self.evaluation_pending = Status.REQUESTED, False
                self.accepted_had = self.accepted_at = self.accepted_offer_id = None
                self.last_decline_reason = event.reason
            case OfferDeclined():
                self._expect_current_offer(event, event.offer_id, event.had_finess)
                self.status, self.current_offer = Status.REQUESTED, None
                self.last_decline_reason = event.reason
            case OfferExpired():
                self._expect_current_offer(event, event.offer_id, event.had_finess)
                self.status, self.current_offer = Status.REQUESTED, None
            case OfferWithdrawn():
                # The offer never reached the HAD; remember its id so a redelivery is a no-op.
                self.offer_hads = {**self.offer_hads, event.offer_id: event.had_finess}
            case ReferralEscalated():
                self._expect(self.status is Status.REQUESTED, event)
                self.status = Status.ESCALATED
            case SearchWidened():
                new = [d for d in event.departments if d not in self.departments]
                self._expect(self.status in SEARCHING_STATUSES and bool(new), event)
                self.status = Status.REQUESTED
                self.departments = (*self.departments, *new)
            case DeskOfferRequested():
                self._expect(self.status in SEARCHING_STATUSES, event)
            case PatientAdmitted():
                self._expect(
                    self.status is Status.ACCEPTED and event.had_finess == self.accepted_had
                    and not self.evaluation_pending,
                    event,
                )
                self.status = Status.ADMITTED
                self.admitted_had, self.admitted_at = event.had_finess, at
            case PatientDischarged():
                self._expect(
                    self.status is Status.ADMITTED and event.had_finess == self.admitted_had,
                    event,
                )
                self.status, self.discharged_at = Status.DISCHARGED, at
            case ReferralCancelled():
                self._expect(self.is_open and self.status is not Status.ADMITTED, event)
                self.current_offer = None  # the hold is released downstream
                self._close(Status.CANCELLED, event.reason, at)
            case OfferUnanswered():
                self._expect_current_offer(event, event.offer_id, event.had_finess)
                assert self.current_offer is not None
                self.current_offer = replace(self.current_offer, unanswered_signalled=True)
            case AdmissionOverdue():
                self._expect(
                    self._awaiting_admission and not self.admission_overdue_signalled, event
                )
                self.admission_overdue_signalled = True
            case ReferralRequestUpdated():
                self._expect(self.status in UPDATABLE_STATUSES, event)
                self.data = replace(self.data, conditions=event.conditions)
                self.missing_conditions = event.missing_conditions
            case ReferralCompleted():
                self._expect(self.status is Status.INCOMPLETE and not self.missing_conditions, event)
                self.status = Status.REQUESTED
            case EdExitRecorded():
                # Keeps the status: the search for an HAD goes on whether or not the patient
                # is still in the ED. Recorded once (see record_ed_exit).
                self._expect(self.ed_exited_at is None, event)
                self.ed_exited_at = event.exited_at
            case _:
                # ReferralRequested only starts a history (see from_events).
                raise InconsistentHistory(f"{type(event).__name__} cannot be applied here")
        self.version += 1

    def _close(self, status: Status, reason: Reason, at: datetime) -> None:
        self.status, self.closed_reason, self.closed_at = status, reason, at

    def _expect(self, fits: bool, event: Event) -> None:
        if not fits:
            raise InconsistentHistory(
                f"{type(event).__name__} does not fit referral {self.referral_id} "
                f"in status {self.status} at version {self.version}"
            )

    def _expect_pending_acceptance(self, event: Event, offer_id: str, had: str) -> None:
        self._expect(
            self.status is Status.ACCEPTED and self.evaluation_pending
            and (self.accepted_offer_id, self.accepted_had) == (offer_id, had),
            event,
        )

    def _expect_current_offer(self, event: Event, offer_id: str, had: str) -> None:
        offer = self.current_offer
        is_current = offer is not None and (offer.offer_id, offer.had_finess) == (offer_id, had)
        self._expect(is_current, event)

    # ---- read side -----------------------------------------------------------------

    @property
    def referral_id(self) -> str:
        return self.data.referral_id

    @property
    def department(self) -> str:
        return self.data.department

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES

    @property
    def admission_due_at(self) -> datetime:
        return admission_due_at(self.data)

    @property
    def _awaiting_admission(self) -> bool:
        return self.is_open and self.status is not Status.ADMITTED

    def clocks(self, unanswered_after: timedelta = DEFAULT_UNANSWERED_AFTER) -> list[Clock]:
        """The timers that should exist now, soonest first (the service layer syncs them)."""
        clocks = []
        if offer := self.current_offer:
            clocks.append(Clock(ClockKind.HOLD_EXPIRY, offer.hold_until, offer.offer_id))
            if not offer.unanswered_signalled:
                due = offer.made_at + unanswered_after
                clocks.append(Clock(ClockKind.OFFER_UNANSWERED, due, offer.offer_id))
        if self._awaiting_admission and not self.admission_overdue_signalled:
            clocks.append(Clock(ClockKind.ADMISSION_OVERDUE, self.admission_due_at, None))
        return sorted(clocks, key=lambda clock: clock.due_at)

    # ---- decisions -----------------------------------------------------------------

    @_DecisionOnClassDataOnInstance
    def request(req: ReferralRequest, at: datetime) -> list[Event]:
        """Open a referral (a negative avis HAD closes it at once as INELIGIBLE)."""
        if problems := req.validate():
            raise InvalidRequest(problems)
        meta = dict(referral_id=req.referral_id, occurred_at=at, actor=source_actor(req.source))
        ineligible = req.avis is not None and not req.avis.eligible
        # A referral closed at once by its avis waits for nothing: no condition is missing.
        missing = () if ineligible else req.conditions.missing()
        events: list[Event] = [ReferralRequested(**meta, request=req, missing_conditions=missing)]
        if ineligible:
            assert req.avis.reason is not None  # guaranteed by validate()
            events.append(
                ReferralDeclaredIneligible(**meta, reason=req.avis.reason, text=req.avis.text)
            )
        return events

    def record_offer(
        self,
        offer_id: str,
        had: str,
        hold_until: datetime,
        explanation: str,
        by_desk: bool,
        at: datetime,
        explanation_json: str = "",
    ) -> list[Event]:
        """The matcher held a place at `had`. Never refused: the hold must be resolved."""
        if offer_id in self.offer_hads:
            return []  # redelivery: already made, answered or withdrawn
        if self.status not in SEARCHING_STATUSES:
            return [
                OfferWithdrawn(
                    **self._meta(at, SYSTEM),
                    offer_id=offer_id,
                    had_finess=had,
                    why=f"referral is {self.status}",
                )
            ]
        actor = desk_actor(self.department) if by_desk else SYSTEM
        return [
            OfferMade(
                **self._meta(at, actor),
                offer_id=offer_id,
                had_finess=had,
                hold_until=hold_until,
                explanation=explanation,
                by_desk=by_desk,
                explanation_json=explanation_json,
            )
        ]

    def accept(
        self, offer_id: str, had: str, at: datetime, pending_evaluation: bool = False
    ) -> list[Event]:
        """Accept the offer; `pending_evaluation`: subject to the liaison nurse's visit, the
        place stays held (no hold expiry) until the HAD confirms or withdraws."""
        self._check_answer(offer_id, had, at)
        return [
            OfferAccepted(
                **self._meta(at, had_actor(had)),
                offer_id=offer_id,
                had_finess=had,
                pending_evaluation=pending_evaluation,
            )
        ]

    def confirm_evaluation(self, had: str, at: datetime) -> list[Event]:
        offer_id = self._check_pending_acceptance(had)
        return [
            EvaluationConfirmed(
                **self._meta(at, had_actor(had)), offer_id=offer_id, had_finess=had
            )
        ]

    def withdraw_acceptance(self, had: str, reason: Reason, text: str, at: datetime) -> list[Event]:
        """The evaluation went against admission: the place is released and the search goes on
        with the next HAD, exactly as after a decline."""
        offer_id = self._check_pending_acceptance(had)
        return [
            AcceptanceWithdrawn(
                **self._meta(at, had_actor(had)),
                offer_id=offer_id,
                had_finess=had,
                reason=reason,
                text=text,
            )
        ]

    def give_avis(
        self, liaison_had: str, eligible: bool, reason: Reason | None, text: str, at: datetime
    ) -> list[Event]:
        """A liaison nurse gives or updates the avis HAD after posting. An unfavourable one closes
        the referral as INELIGIBLE while no place is held (searching, or incomplete); once an HAD holds
        a place (offered, accepted) it is recorded and that HAD declines or withdraws."""
        self._refuse_if_closed()
        if self.status is Status.ADMITTED:
            raise IllegalTransition(ErrorCode.INVALID_STATE, "the patient is already admitted")
        if not eligible and reason is None:
            raise InvalidRequest([("reason", "required when the avis is unfavourable")])
        meta = self._meta(at, liaison_actor(liaison_had))
        events: list[Event] = [AvisGiven(**meta, eligible=eligible, reason=reason, text=text)]
        if not eligible and self.status in NO_PLACE_HELD_STATUSES:
            assert reason is not None
            events.append(ReferralDeclaredIneligible(**meta, reason=reason, text=text))
        return events

    def decline(
        self, offer_id: str, had: str, reason: Reason, text: str, at: datetime
    ) -> list[Event]:
        self._check_answer(offer_id, had, at)
        return [
            OfferDeclined(
                **self._meta(at, had_actor(had)),
                offer_id=offer_id,
                had_finess=had,
                reason=reason,
                text=text,
            )
        ]

    def expire(self, offer_id: str, at: datetime) -> list[Event]:
        """The hold clock fired. A stale timer (offer answered, or rescheduled) is a no-op."""
        offer = self.current_offer
        if offer is None or offer.offer_id != offer_id or at < offer.hold_until:
            return []
        return [
            OfferExpired(
                **self._meta(at, SYSTEM), offer_id=offer_id, had_finess=offer.had_finess
            )
        ]

    def escalate(self, why: str, at: datetime) -> list[Event]:
        """No HAD left for this referral. Late matcher results in any other state: no-op."""
        if self.status is not Status.REQUESTED:
            return []
        return [ReferralEscalated(**self._meta(at, SYSTEM), why=why)]

    def widen(
        self, departments: Iterable[str], at: datetime, actor: str | None = None
    ) -> list[Event]:
        self._check_desk_can_steer()
        new = tuple(dict.fromkeys(d for d in departments if d not in self.departments))
        if not new:
            raise IllegalTransition(
                ErrorCode.NO_NEW_DEPARTMENT, "every department is already searched"
            )
        return [
            SearchWidened(
                **self._meta(at, actor or desk_actor(self.department)), departments=new
            )
        ]

    def desk_offer(self, had: str, at: datetime, actor: str | None = None) -> list[Event]:
        self._check_desk_can_steer()
        return [
            DeskOfferRequested(
                **self._meta(at, actor or desk_actor(self.department)), had_finess=had
            )
        ]

    def admit(self, had: str, at: datetime) -> list[Event]:
        self._refuse_if_closed()
        if self.status is Status.ADMITTED:
            raise IllegalTransition(ErrorCode.INVALID_STATE, "the patient is already admitted")
        if self.status is not Status.ACCEPTED:
            raise IllegalTransition(
                ErrorCode.NOT_ACCEPTED, f"no HAD has accepted (status {self.status})"
            )
        if had != self.accepted_had:
            raise IllegalTransition(
                ErrorCode.NOT_ADDRESSED_TO_CALLER, "another HAD accepted this referral"
            )
        if self.evaluation_pending:
            raise IllegalTransition(
                ErrorCode.EVALUATION_PENDING, "the acceptance awaits its evaluation: confirm it first"
            )
        return [PatientAdmitted(**self._meta(at, had_actor(had)), had_finess=had)]

    def discharge(self, had: str, at: datetime) -> list[Event]:
        self._refuse_if_closed()
        if self.status is not Status.ADMITTED:
            raise IllegalTransition(
                ErrorCode.NOT_ADMITTED, f"the patient is not admitted (status {self.status})"
            )
        if had != self.admitted_had:
            raise IllegalTransition(
                ErrorCode.NOT_ADDRESSED_TO_CALLER, "another HAD admitted this patient"
            )
        return [PatientDischarged(**self._meta(at, had_actor(had)), had_finess=had)]

    def cancel(
        self, reason: Reason, text: str, at: datetime, actor: str | None = None
    ) -> list[Event]:
        # Checked before "closed": a discharged patient was admitted, which is the real reason.
        if self.status in (Status.ADMITTED, Status.DISCHARGED):
            raise IllegalTransition(ErrorCode.INVALID_STATE, "the patient has been admitted")
        self._refuse_if_closed()
        return [ReferralCancelled(**self._meta(at, actor), reason=reason, text=text)]

    def offer_unanswered(self, offer_id: str, at: datetime) -> list[Event]:
        """The OFFER_UNANSWERED clock fired. Its delay is configured where clocks are kept,
        so it is not checked again here; an answered or replaced offer makes it a no-op."""
        offer = self.current_offer
        if offer is None or offer.offer_id != offer_id or offer.unanswered_signalled:
            return []
        return [
            OfferUnanswered(
                **self._meta(at, SYSTEM), offer_id=offer_id, had_finess=offer.had_finess
            )
        ]

    def admission_overdue(self, at: datetime) -> list[Event]:
        if (
            not self._awaiting_admission
            or self.admission_overdue_signalled
            or at < self.admission_due_at
        ):
            return []
        planned = self.data.clinical.planned_date if self.data.clinical.urgency is Urgency.PLANNED else None
        return [AdmissionOverdue(**self._meta(at, SYSTEM), due_at=self.admission_due_at, planned_date=planned)]

    def update_request(self, conditions: Conditions, expected_version: int, at: datetime,
                       actor: str) -> list[Event]:
        """The source updates its request's conditions, on the version it read (optimistic
        concurrency: anything that happened since, an offer or a clock, makes it stale).
        Giving the last missing consent completes the referral, which is then matched as a new
        one. Withdrawing a consent given is refused: that is a cancellation (PATIENT_REFUSED,
        GP_REFUSED), since an HAD may already be organising the admission on its strength."""
        if expected_version != self.version:
            raise StaleVersion(expected_version, self.version)
        self._refuse_if_closed()
        if self.status not in UPDATABLE_STATUSES:
            raise IllegalTransition(
                ErrorCode.INVALID_STATE,
                f"an HAD has accepted (status {self.status}): the request can no longer change",
            )
        old = self.data.conditions
        withdrawn = [name for name in ("patient_consent", "gp_agreement")
                     if getattr(old, name) and not getattr(conditions, name)]
        if withdrawn:
            raise IllegalTransition(
                ErrorCode.CONDITION_WITHDRAWN,
                f"{', '.join(withdrawn)} was given: cancel the referral (PATIENT_REFUSED or GP_REFUSED)",
            )
        changed = tuple(f"conditions.{name}" for name in ("patient_consent", "gp_agreement", "caregiver_present")
                        if getattr(old, name) != getattr(conditions, name))
        if not changed:
            return []
        # An old history may hold a referral offered without consent: only INCOMPLETE waits.
        missing = conditions.missing() if self.status is Status.INCOMPLETE else ()
        events: list[Event] = [ReferralRequestUpdated(
            **self._meta(at, actor), conditions=conditions, changed_fields=changed, missing_conditions=missing)]
        if self.status is Status.INCOMPLETE and not missing:
            events.append(ReferralCompleted(**self._meta(at, actor)))
        return events

    def record_ed_exit(self, exited_at: datetime, at: datetime, actor: str) -> list[Event]:
        """The referring hospital reports the patient left its ED. The first report is kept: a
        repeated one changes nothing (an exit time is corrected at the hospital, not here)."""
        self._refuse_if_closed()
        if self.ed_exited_at is not None:
            return []
        arrival = self.data.ed_arrival_at
        if arrival is not None and exited_at < arrival:
            raise IllegalTransition(
                ErrorCode.INVALID_STATE,
                f"ED exit {exited_at.isoformat()} is before the ED arrival {arrival.isoformat()}",
            )
        return [EdExitRecorded(**self._meta(at, actor), exited_at=exited_at)]

    # ---- guards --------------------------------------------------------------------

    def _meta(self, at: datetime, actor: str | None) -> dict:
        return dict(referral_id=self.referral_id, occurred_at=at, actor=actor)

    def _refuse_if_closed(self) -> None:
        if not self.is_open:
            raise IllegalTransition(ErrorCode.ALREADY_CLOSED, f"the referral is {self.status}")

    def _check_answer(self, offer_id: str, had: str, at: datetime) -> None:
        """An HAD answering an offer: it must be the live offer, addressed to that HAD."""
        self._refuse_if_closed()
        addressee = self.offer_hads.get(offer_id)
        if addressee is not None and addressee != had:
            raise IllegalTransition(
                ErrorCode.NOT_ADDRESSED_TO_CALLER, f"offer {offer_id} was made to another HAD"
            )
        offer = self.current_offer
        if offer is None:
            raise IllegalTransition(
                ErrorCode.NO_CURRENT_OFFER,
                f"no offer is awaiting an answer (status {self.status})",
            )
        if offer.offer_id != offer_id:
            raise IllegalTransition(
                ErrorCode.OFFER_SUPERSEDED, f"offer {offer_id} is not the current offer"
            )
        if at > offer.hold_until:
            raise IllegalTransition(
                ErrorCode.OFFER_EXPIRED, f"the hold ended at {offer.hold_until.isoformat()}"
            )

    def _check_pending_acceptance(self, had: str) -> str:
        """The HAD confirming or withdrawing must hold an acceptance pending evaluation."""
        self._refuse_if_closed()
        if self.status is not Status.ACCEPTED or had != self.accepted_had:
            raise IllegalTransition(
                ErrorCode.NOT_ACCEPTED, f"this HAD holds no acceptance (status {self.status})"
            )
        if not self.evaluation_pending:
            raise IllegalTransition(
                ErrorCode.NO_PENDING_EVALUATION, "the acceptance is not pending evaluation"
            )
        assert self.accepted_offer_id is not None
        return self.accepted_offer_id

    def _check_desk_can_steer(self) -> None:
        self._refuse_if_closed()
        if self.status is Status.INCOMPLETE:
            raise IllegalTransition(
                ErrorCode.CONDITIONS_MISSING,
                f"the referral lacks {', '.join(self.missing_conditions)}: the source must update it first",
            )
        if self.status is Status.OFFERED:
            raise IllegalTransition(
                ErrorCode.OFFER_PENDING, "an offer is awaiting the HAD's answer"
            )
        if self.status not in SEARCHING_STATUSES:
            raise IllegalTransition(
                ErrorCode.INVALID_STATE, f"an HAD has already accepted (status {self.status})"
            )
