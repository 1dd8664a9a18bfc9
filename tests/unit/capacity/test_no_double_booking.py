"""Matching rule 4, "no double booking, ever", under random interleavings of everything that
touches capacity: declarations (some late or redelivered), matches and desk offers placing
holds, cascades after declines, accepts, declines/expiries/withdrawals, admissions, time.

The ledgers live as the repository stores them: counts without holds, and a table of holds;
each command loads the ledger with only the holds it touches (none for matching), as the
matcher does, so the counts are checked against the oracle over every interleaving.

The state machine keeps its own model (an oracle independent of the ledger's bookkeeping) of
which declaration was in force when each hold was placed, and checks after every step, for
every HAD:

    holds placed under the current declaration and not RELEASED <= its declared places

(holds placed under an earlier declaration are grandfathered; see capacity.py), that the
ledger agrees with the oracle on that and on live places, and that matching never offers a
HAD without a live place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from reflexe_capacity.domain import (
    CapacityDeclaration,
    Candidate,
    HadEstablishment,
    HadLedger,
    Hold,
    HoldState,
    IllegalHoldTransition,
    MatchRequest,
    NoPlaceLeft,
    desk_offer,
    match,
)
from reflexe_common.vocabulary import CapacityStatus, Equipment, Mention, PlaceOfCare, Urgency

T0 = datetime(2024, 3, 12, 8, 0, tzinfo=UTC)
STALE_AFTER = timedelta(hours=2)
HOLD_FOR = timedelta(minutes=30)
EHPAD = "340099993"
COMMUNES = ("34172", "34032", "34301")


def _had(finess: str, communes: set[str], size: int, conventions: frozenset[str] = frozenset()) -> HadEstablishment:
    return HadEstablishment(
        finess=finess,
        name=f"HAD {finess}",
        departments=frozenset({"34"}),
        mentions=frozenset({Mention.SOCLE}),
        mpp_supported=frozenset({"04", "07"}),
        equipment=frozenset(Equipment),
        zone_communes=frozenset(communes),
        ehpad_conventions=conventions,
        authorised_places=size,
    )


HADS = {
    h.finess: h
    for h in (
        _had("340000017", {"34172", "34032"}, 10),
        _had("340000025", {"34032", "34301"}, 4, frozenset({EHPAD})),
        _had("340000033", {"34172", "34301"}, 25),
    )
}
FINESS = tuple(HADS)
STATUSES = st.sampled_from(
    [CapacityStatus.OPEN, CapacityStatus.OPEN, CapacityStatus.OPEN, CapacityStatus.SATURATED, CapacityStatus.CLOSED]
)


@dataclass
class ModelHold:
    finess: str
    referral_id: str
    state: HoldState
    placed_under: datetime  # the oracle's own record of the declaration then in force
    converted_at: datetime | None = None


class LedgerRows:
    """What the repository stores: each HAD's ledger without its holds, and the holds apart."""

    def __init__(self) -> None:
        self.rows = {finess: HadLedger(finess) for finess in FINESS}
        self.holds: dict[str, Hold] = {}

    def load(self, finess: str, *hold_ids: str) -> HadLedger:
        return dataclasses.replace(self.rows[finess], holds=[self.holds[h] for h in hold_ids])

    def save(self, ledger: HadLedger) -> None:
        self.holds.update((h.hold_id, h) for h in ledger.holds)
        self.rows[ledger.had_finess] = dataclasses.replace(ledger, holds=[])


class CapacityMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.store = LedgerRows()
        self.sent: dict[str, list[CapacityDeclaration]] = {finess: [] for finess in FINESS}
        self.current: dict[str, CapacityDeclaration | None] = dict.fromkeys(FINESS)
        self.holds: dict[str, ModelHold] = {}
        self.tried: dict[str, set[str]] = {}  # referral -> HADs offered so far
        self.counter = 0

    # ---- helpers -------------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def _ids_in(self, *states: HoldState) -> list[str]:
        return sorted(hold_id for hold_id, h in self.holds.items() if h.state in states)

    def _candidates(self) -> list[Candidate]:
        return [Candidate(HADS[f], self.store.load(f), 60.0 * (i + 1)) for i, f in enumerate(FINESS)]

    def _request(self, referral_id: str, commune: str, at_ehpad: bool, urgency: Urgency) -> MatchRequest:
        return MatchRequest(
            referral_id=referral_id,
            department="34",
            care_commune=commune,
            place_of_care=PlaceOfCare.EHPAD if at_ehpad else PlaceOfCare.HOME,
            ehpad_finess=EHPAD if at_ehpad else None,
            main_mpp="04",
            associated_mpp=("07",),
            equipment=frozenset({Equipment.SYRINGE_DRIVER}),
            patient_birth_year=1946,
            requested_on=date(2026, 11, 22),
            urgency=urgency,
            excluded_hads=frozenset(self.tried.get(referral_id, ())),
        )

    def _hold_on(self, finess: str, referral_id: str) -> None:
        ledger = self.store.load(finess)
        assert ledger.live_places() > 0, "offered a HAD with no live place"
        assert ledger.declaration is not None and ledger.declaration.status is CapacityStatus.OPEN
        hold_id = self._next_id("hold")
        ledger.place_hold(hold_id, referral_id, self.now, HOLD_FOR)
        self.store.save(ledger)
        self.holds[hold_id] = ModelHold(finess, referral_id, HoldState.ACTIVE, self.current[finess].declared_at)
        self.tried.setdefault(referral_id, set()).add(finess)

    def _offer(self, referral_id: str, commune: str, at_ehpad: bool, urgency: Urgency) -> None:
        request = self._request(referral_id, commune, at_ehpad, urgency)
        decision = match(request, self._candidates(), self.now, STALE_AFTER)
        assert len(decision.ranked) + len(decision.excluded) == len(FINESS)
        if decision.chosen is not None:
            self._hold_on(decision.chosen, referral_id)

    def _change(self, hold_id: str, command) -> None:
        ledger = self.store.load(self.holds[hold_id].finess, hold_id)
        command(ledger)
        self.store.save(ledger)

    # ---- rules ---------------------------------------------------------------------------

    @rule(
        finess=st.sampled_from(FINESS),
        places=st.integers(0, 4),
        admissions=st.integers(0, 3),
        status=STATUSES,
        age_minutes=st.integers(0, 90),  # > 0: declared earlier, delivered now (maybe out of order)
    )
    def declare(self, finess, places, admissions, status, age_minutes):
        sent = CapacityDeclaration(finess, places, admissions, status, self.now - timedelta(minutes=age_minutes))
        self.sent[finess].append(sent)
        current = self.current[finess]
        newer = current is None or sent.declared_at > current.declared_at
        ledger = self.store.load(finess)
        assert ledger.declare(sent) is newer
        self.store.save(ledger)
        if newer:
            self.current[finess] = sent

    @rule(finess=st.sampled_from(FINESS), data=st.data())
    def redeliver_a_declaration(self, finess, data):
        if not self.sent[finess]:
            return
        old = data.draw(st.sampled_from(self.sent[finess]))
        assert self.store.load(finess).declare(old) is False

    @rule(commune=st.sampled_from(COMMUNES), at_ehpad=st.booleans(), urgency=st.sampled_from(Urgency))
    def new_referral_is_matched(self, commune, at_ehpad, urgency):
        self._offer(self._next_id("ref"), commune, at_ehpad, urgency)

    @precondition(lambda self: self._ids_in(HoldState.RELEASED))
    @rule(data=st.data(), commune=st.sampled_from(COMMUNES))
    def declined_referral_cascades(self, data, commune):
        referral_id = self.holds[data.draw(st.sampled_from(self._ids_in(HoldState.RELEASED)))].referral_id
        if any(h.referral_id == referral_id and h.state is not HoldState.RELEASED for h in self.holds.values()):
            return  # already offered elsewhere, or admitted
        self._offer(referral_id, commune, False, Urgency.WITHIN_24H)

    @rule(finess=st.sampled_from(FINESS))
    def desk_offers(self, finess):
        referral_id = self._next_id("ref")
        request = self._request(referral_id, "34172", False, Urgency.PLANNED)
        decision = desk_offer(request, self._candidates()[FINESS.index(finess)], self.now, STALE_AFTER)
        if decision.chosen is not None:
            self._hold_on(decision.chosen, referral_id)

    @rule(finess=st.sampled_from(FINESS))
    def hold_is_forced_directly(self, finess):
        # Bypassing the matcher: the ledger alone must refuse what would double-book.
        ledger = self.store.load(finess)
        open_ = ledger.declaration is not None and ledger.declaration.status is CapacityStatus.OPEN
        if open_ and ledger.live_places() > 0:
            self._hold_on(finess, self._next_id("ref"))
            return
        version = ledger.version
        with pytest.raises(NoPlaceLeft):
            ledger.place_hold(self._next_id("hold"), self._next_id("ref"), self.now, HOLD_FOR)
        assert ledger.version == version

    @precondition(lambda self: self._ids_in(HoldState.ACTIVE))
    @rule(data=st.data())
    def had_accepts(self, data):
        hold_id = data.draw(st.sampled_from(self._ids_in(HoldState.ACTIVE)))
        self._change(hold_id, lambda ledger: ledger.confirm(hold_id))
        self.holds[hold_id].state = HoldState.CONFIRMED

    @precondition(lambda self: self._ids_in(HoldState.ACTIVE, HoldState.CONFIRMED))
    @rule(data=st.data())
    def declined_withdrawn_or_cancelled(self, data):
        hold_id = data.draw(st.sampled_from(self._ids_in(HoldState.ACTIVE, HoldState.CONFIRMED)))
        self._change(hold_id, lambda ledger: ledger.release(hold_id))
        self.holds[hold_id].state = HoldState.RELEASED

    @precondition(lambda self: self._ids_in(HoldState.CONFIRMED))
    @rule(data=st.data())
    def patient_admitted(self, data):
        hold_id = data.draw(st.sampled_from(self._ids_in(HoldState.CONFIRMED)))
        self._change(hold_id, lambda ledger: ledger.convert(hold_id, self.now))
        self.holds[hold_id].state = HoldState.CONVERTED
        self.holds[hold_id].converted_at = self.now

    @precondition(lambda self: self._ids_in(HoldState.RELEASED, HoldState.CONVERTED))
    @rule(data=st.data())
    def illegal_transition_changes_nothing(self, data):
        hold_id = data.draw(st.sampled_from(self._ids_in(HoldState.RELEASED, HoldState.CONVERTED)))
        ledger = self.store.load(self.holds[hold_id].finess, hold_id)
        version = ledger.version
        attempt = ledger.confirm if self.holds[hold_id].state is HoldState.RELEASED else ledger.release
        try:
            attempt(hold_id)
        except IllegalHoldTransition:
            assert ledger.version == version
        else:
            raise AssertionError("illegal transition accepted")

    @rule(minutes=st.integers(1, 8 * 60))
    def time_passes(self, minutes):
        self.now += timedelta(minutes=minutes)
        for finess in FINESS:
            ledger = self.store.load(finess, *(h for h in self._ids_in(HoldState.ACTIVE) if self.holds[h].finess == finess))
            for hold in ledger.expire_holds(self.now):
                model = self.holds[hold.hold_id]
                assert model.state is HoldState.ACTIVE and hold.expires_at <= self.now
                model.state = HoldState.RELEASED
            self.store.save(ledger)

    # ---- invariants ----------------------------------------------------------------------

    @invariant()
    def no_double_booking(self):
        for finess, ledger in self.store.rows.items():
            current = self.current[finess]
            if current is None:
                assert not any(h.finess == finess and h.state is not HoldState.RELEASED for h in self.holds.values())
                continue
            promised = sum(
                1
                for h in self.holds.values()
                if h.finess == finess and h.placed_under == current.declared_at and h.state is not HoldState.RELEASED
            )
            assert promised <= current.places_available, f"{finess} double-booked"
            assert ledger.invariant_holds()
            assert ledger.promised_under_declaration() == promised

    @invariant()
    def live_places_follow_the_rule(self):
        for finess, ledger in self.store.rows.items():
            current = self.current[finess]
            assert ledger.declaration == current
            if current is None:
                assert ledger.live_places() == 0
                continue
            mine = [h for h in self.holds.values() if h.finess == finess]
            raw = (
                current.places_available
                - sum(1 for h in mine if h.state in (HoldState.ACTIVE, HoldState.CONFIRMED))
                - sum(1 for h in mine if h.state is HoldState.CONVERTED and h.converted_at >= current.declared_at)
            )
            assert ledger.raw_live_places() == raw
            assert ledger.confirmed == sum(1 for h in mine if h.state is HoldState.CONFIRMED)
            assert ledger.live_places() == max(0, raw)

    @invariant()
    def ledger_and_model_agree_on_hold_states(self):
        for finess in FINESS:
            assert {h.hold_id: h.state for h in self.store.holds.values() if h.had_finess == finess} == {
                hold_id: h.state for hold_id, h in self.holds.items() if h.finess == finess
            }


CapacityMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestNoDoubleBooking = CapacityMachine.TestCase
