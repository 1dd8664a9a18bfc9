"""Live capacity of one HAD: its latest declaration and the holds the platform placed on it.

Vocabulary
----------
- A *declaration* is pushed by the HAD: places available for new admissions, admissions it
  can still do today, status, time of declaration. The declared figures know nothing of the
  platform's outstanding holds, hence (docs/domain.md, "Capacity and matching"):

      live places = declared places − ACTIVE/CONFIRMED holds − conversions since the declaration

  where a conversion is "since the declaration" when ``converted_at >= declared_at``.
- A *hold* reserves one place for one referral: ACTIVE while the offer waits for the HAD's
  answer, CONFIRMED once accepted (until admission), CONVERTED once the patient is admitted,
  RELEASED when declined, expired, withdrawn or cancelled.

Declarations
------------
A newer declaration replaces the current one; one whose ``declared_at`` is not newer than the
current one is ignored (out-of-order delivery, redelivery). Holds are never cancelled by a
declaration, even one with fewer places than outstanding holds: those patients were promised a
place. Live places then report 0 until enough holds end.

The no-double-booking invariant (what the platform promises)
------------------------------------------------------------
Each hold records the declaration in force when it was placed (``placed_under``, that
declaration's ``declared_at``; declared_at values of successive declarations strictly increase,
so it identifies the declaration). Then, for every HAD at every moment:

    #{holds placed under the current declaration whose state is ACTIVE, CONFIRMED or CONVERTED}
        <= current declaration's places_available

and, with no declaration, no hold is ACTIVE or CONFIRMED (none can be placed).

Holds placed under an earlier declaration are *grandfathered*: the HAD declared its new figure
while they were outstanding, so the platform cannot be blamed for them, nor for their later
admission. Two tempting alternatives are wrong:
- counting conversions of grandfathered holds ("conversions since the declaration") would
  make the invariant fail when the HAD declares 1 place while 2 promised patients are then
  admitted, with the platform having done nothing;
- comparing ``made_at`` with ``declared_at`` would count holds made between a declaration's
  timestamp and its (late) arrival, which the platform could not have known about.

``place_hold`` keeps the invariant: every hold counted above is also subtracted by
``live_places`` (a hold placed under the declaration was converted, if at all, after it), so
``live_places() > 0`` implies room under the invariant. confirm/convert/release never add to
the count, and a new declaration starts a fresh count. The ledger keeps both sides as counts
maintained by these transitions (``HadLedger``), never by summing over the HAD's holds.

Admissions still possible today
-------------------------------
Kept simple and conservative: the declared ``admissions_possible_today`` minus the CONFIRMED
holds (an accepted patient is assumed to be admitted today) minus conversions since the
declaration, on the declaration's calendar day, taken in the declaration's own time zone (the
HAD's clock). On a later day the declared daily figure says nothing: ``None`` (no daily bound
known; the declaration will be stale by then anyway).

Pure domain: no I/O, stdlib only. Time is always passed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

from reflexe_common.vocabulary import CapacityStatus


# Far above the largest HAD's census (a few hundred patients): beyond it, a typing error.
MAX_ACTIVE_PATIENTS = 10_000


class CapacityError(Exception):
    """A capacity operation was refused; nothing changed."""


class NoPlaceLeft(CapacityError):
    pass


class UnknownHold(CapacityError):
    pass


class IllegalHoldTransition(CapacityError):
    pass


class HoldConflict(CapacityError):
    """The same hold id for another referral, or a second live hold for one referral."""


class HoldState(StrEnum):
    ACTIVE = "ACTIVE"  # offered, waiting for the HAD's answer
    CONFIRMED = "CONFIRMED"  # accepted: place reserved until admission
    CONVERTED = "CONVERTED"  # patient admitted: counts as an admission at converted_at
    RELEASED = "RELEASED"  # declined, expired, withdrawn or cancelled


@dataclass(frozen=True, slots=True)
class CapacityDeclaration:
    had_finess: str
    places_available: int
    admissions_possible_today: int
    status: CapacityStatus
    declared_at: datetime
    # The HAD's census: all its patients in care, not only the platform's (None: not declared).
    active_patients: int | None = None

    def __post_init__(self) -> None:
        if self.places_available < 0 or self.admissions_possible_today < 0:
            raise ValueError("declared places and admissions must be >= 0")
        if self.active_patients is not None and not 0 <= self.active_patients <= MAX_ACTIVE_PATIENTS:
            raise ValueError(f"active_patients must be between 0 and {MAX_ACTIVE_PATIENTS}")


@dataclass(frozen=True, slots=True)
class Hold:
    hold_id: str
    referral_id: str
    had_finess: str
    made_at: datetime
    expires_at: datetime  # only ACTIVE holds expire; CONFIRMED ones wait for admission
    state: HoldState
    placed_under: datetime  # declared_at of the declaration in force when placed
    converted_at: datetime | None = None

    @property
    def takes_place(self) -> bool:
        return self.state in (HoldState.ACTIVE, HoldState.CONFIRMED)


# Answers kept per HAD for its median response time: a bounded recent window, so ranking costs
# the same whatever the HAD's history (a week of a busy HAD is a few hundred answers at most).
RESPONSE_WINDOW_ANSWERS = 100


@dataclass(frozen=True, slots=True)
class ResponseTimes:
    """An HAD's most recent answers to offers (made_at, seconds to answer), oldest first."""

    answers: tuple[tuple[datetime, float], ...] = ()

    def with_answer(self, made_at: datetime, answered_at: datetime) -> ResponseTimes:
        answer = (made_at, (answered_at - made_at).total_seconds())
        return ResponseTimes((*self.answers, answer)[-RESPONSE_WINDOW_ANSWERS:])

    def median_seconds(self, now: datetime, window: timedelta) -> float | None:
        """Median answer time of the offers made within ``window`` before ``now``; None if none."""
        recent = sorted(s for made_at, s in self.answers if now - window <= made_at <= now)
        if not recent:
            return None
        middle = len(recent) // 2
        return recent[middle] if len(recent) % 2 else (recent[middle - 1] + recent[middle]) / 2


@dataclass(eq=False)
class HadLedger:
    """Aggregate: one HAD's capacity. Every change goes through its methods.

    The ledger carries counts, not the HAD's whole list of holds, so that a decision costs the
    same with ten thousand live holds as with none:

    - ``holding``: holds ACTIVE or CONFIRMED (they take a place);
    - ``confirmed``: holds CONFIRMED (accepted patients, for the day's admissions);
    - ``promised``: holds placed under the current declaration and not RELEASED (the
      invariant's left side);
    - ``conversions``: when each hold converted at or after the current declaration was
      converted (a declaration's worth of admissions: few, and emptied by the next one).

    ``holds`` are the holds the command at hand works on (the repository loads the hold an
    answer names, or a referral's holds at this HAD before placing one): the transitions
    check and update the counts from the hold's own state, so the counts stay exact.
    """

    had_finess: str
    declaration: CapacityDeclaration | None = None
    holds: list[Hold] = field(default_factory=list)
    holding: int = 0
    confirmed: int = 0
    promised: int = 0
    conversions: tuple[datetime, ...] = ()
    response_times: ResponseTimes = field(default_factory=ResponseTimes)
    # Bumped on every effective change, for optimistic concurrency in the repository.
    version: int = 0

    # ---- reading -------------------------------------------------------------------------

    def live_places(self) -> int:
        return max(0, self.raw_live_places())

    def raw_live_places(self) -> int:
        if self.declaration is None:
            return 0
        return self.declaration.places_available - self.holding - len(self.conversions)

    def admissions_today_left(self, now: datetime) -> int | None:
        """See the module docstring; ``None`` when the declaration is from another day."""
        if self.declaration is None:
            return 0
        declared_at = self.declaration.declared_at
        if _day_of(now, declared_at) != declared_at.date():
            return None
        return max(0, self.declaration.admissions_possible_today - self.confirmed - len(self.conversions))

    def is_stale(self, now: datetime, stale_after: timedelta) -> bool:
        return self.declaration is None or now - self.declaration.declared_at > stale_after

    def promised_under_declaration(self) -> int:
        """Places the platform promised under the current declaration (the invariant's left side)."""
        if self.declaration is None:
            return self.holding  # none can be placed without a declaration
        return self.promised

    def invariant_margin(self) -> int:
        """Declared places minus promised ones; negative would be a double booking."""
        declared = self.declaration.places_available if self.declaration else 0
        return declared - self.promised_under_declaration()

    def invariant_holds(self) -> bool:
        return self.invariant_margin() >= 0

    def hold(self, hold_id: str) -> Hold:
        for h in self.holds:
            if h.hold_id == hold_id:
                return h
        raise UnknownHold(f"HAD {self.had_finess}: no hold {hold_id}")

    def median_response_seconds(self, now: datetime, window: timedelta) -> float | None:
        return self.response_times.median_seconds(now, window)

    # ---- changing ------------------------------------------------------------------------

    def declare(self, declaration: CapacityDeclaration) -> bool:
        """Apply a declaration; returns False when ignored as not newer than the current one."""
        if declaration.had_finess != self.had_finess:
            raise ValueError(f"declaration for {declaration.had_finess} sent to {self.had_finess}")
        if self.declaration is not None and declaration.declared_at <= self.declaration.declared_at:
            return False
        self.declaration = declaration
        # No hold was placed under the new declaration yet; admissions before it no longer count.
        self.promised = 0
        self.conversions = tuple(at for at in self.conversions if at >= declaration.declared_at)
        self.version += 1
        return True

    def place_hold(
        self, hold_id: str, referral_id: str, now: datetime, hold_for: timedelta
    ) -> Hold:
        """Reserve one place. Idempotent on ``hold_id`` (redelivered commands)."""
        if hold_for <= timedelta(0):
            raise ValueError("hold_for must be positive")
        existing = next((h for h in self.holds if h.hold_id == hold_id), None)
        if existing is not None:
            if existing.referral_id != referral_id:
                raise HoldConflict(f"hold {hold_id} already exists for another referral")
            return existing
        if any(h.referral_id == referral_id and h.takes_place for h in self.holds):
            raise HoldConflict(f"referral {referral_id} already holds a place at {self.had_finess}")
        if self.declaration is None:
            raise NoPlaceLeft(f"HAD {self.had_finess} has never declared its capacity")
        if self.declaration.status is not CapacityStatus.OPEN:
            raise NoPlaceLeft(f"HAD {self.had_finess} is {self.declaration.status}")
        if self.live_places() == 0:
            raise NoPlaceLeft(f"HAD {self.had_finess} has no live place")
        new = Hold(
            hold_id=hold_id,
            referral_id=referral_id,
            had_finess=self.had_finess,
            made_at=now,
            expires_at=now + hold_for,
            state=HoldState.ACTIVE,
            placed_under=self.declaration.declared_at,
        )
        self.holds.append(new)
        self.holding += 1
        self.promised += 1
        self.version += 1
        return new

    def confirm(self, hold_id: str) -> Hold:
        return self._transition(hold_id, HoldState.CONFIRMED, allowed_from={HoldState.ACTIVE})

    def release(self, hold_id: str) -> Hold:
        # An admitted patient's place is given back by the next declaration, not by a release.
        return self._transition(
            hold_id, HoldState.RELEASED, allowed_from={HoldState.ACTIVE, HoldState.CONFIRMED}
        )

    def convert(self, hold_id: str, at: datetime) -> Hold:
        return self._transition(
            hold_id, HoldState.CONVERTED, allowed_from={HoldState.CONFIRMED}, converted_at=at
        )

    def record_answer(self, hold_id: str, answered_at: datetime) -> None:
        """The HAD answered this hold's offer (accepted or declined): its response time counts."""
        self.response_times = self.response_times.with_answer(self.hold(hold_id).made_at, answered_at)

    def expire_holds(self, now: datetime) -> tuple[Hold, ...]:
        """Release the loaded ACTIVE holds whose offer expired; returns them (to cascade the referrals)."""
        expired = [h for h in self.holds if h.state is HoldState.ACTIVE and h.expires_at <= now]
        return tuple(self.release(h.hold_id) for h in expired)

    # ---- internals -----------------------------------------------------------------------

    def _transition(
        self,
        hold_id: str,
        target: HoldState,
        allowed_from: set[HoldState],
        converted_at: datetime | None = None,
    ) -> Hold:
        current = self.hold(hold_id)
        if current.state is target:
            return current  # redelivered command: already done
        if current.state not in allowed_from:
            raise IllegalHoldTransition(
                f"hold {hold_id} at {self.had_finess}: {current.state} -> {target} is not allowed"
            )
        changes: dict[str, object] = {"state": target}
        if converted_at is not None:
            changes["converted_at"] = converted_at
        updated = dataclasses.replace(current, **changes)
        self._count(current, updated)
        self.holds[self.holds.index(current)] = updated
        self.version += 1
        return updated

    def _count(self, before: Hold, after: Hold) -> None:
        """Move the counts from ``before``'s state to ``after``'s (allowed transitions only)."""
        self.holding += after.takes_place - before.takes_place
        self.confirmed += (after.state is HoldState.CONFIRMED) - (before.state is HoldState.CONFIRMED)
        under_current = self.declaration is not None and before.placed_under == self.declaration.declared_at
        if under_current and after.state is HoldState.RELEASED:
            self.promised -= 1
        if (
            after.state is HoldState.CONVERTED
            and after.converted_at is not None
            and self.declaration is not None
            and after.converted_at >= self.declaration.declared_at
        ):
            self.conversions = (*self.conversions, after.converted_at)
        if min(self.holding, self.confirmed, self.promised) < 0:
            raise AssertionError(f"HAD {self.had_finess}: negative hold count ({before.state} -> {after.state})")


def _day_of(moment: datetime, reference: datetime) -> date:
    """Calendar day of ``moment`` on the clock (time zone) of ``reference``."""
    if reference.tzinfo is not None and moment.tzinfo is not None:
        moment = moment.astimezone(reference.tzinfo)
    return moment.date()
