"""The per-HAD capacity ledger: live places, holds' lifecycle, declarations, invariant."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from reflexe_capacity.domain import (
    CapacityDeclaration,
    HadLedger,
    HoldConflict,
    ResponseTimes,
    HoldState,
    IllegalHoldTransition,
    NoPlaceLeft,
    UnknownHold,
)
from reflexe_common.vocabulary import CapacityStatus

FINESS = "340001007"
T0 = datetime(2024, 3, 12, 9, 0, tzinfo=UTC)
HOLD_FOR = timedelta(minutes=30)


def declaration(
    places: int, at: datetime = T0, status: CapacityStatus = CapacityStatus.OPEN, admissions: int = 5
) -> CapacityDeclaration:
    return CapacityDeclaration(FINESS, places, admissions, status, at)


def declared(places: int, **kwargs) -> HadLedger:
    book = HadLedger(FINESS)
    book.declare(declaration(places, **kwargs))
    return book


def place(book: HadLedger, n: int, at: datetime = T0, prefix: str = "h") -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for hold_id in ids:
        book.place_hold(hold_id, f"ref-{hold_id}", at, HOLD_FOR)
    return ids


# ---- live places -------------------------------------------------------------------------


def test_live_places_subtract_active_confirmed_and_admissions_since_the_declaration():
    book = declared(5)
    a, b, c, d = place(book, 4)
    book.confirm(b)
    book.confirm(c)
    book.convert(c, T0 + timedelta(hours=1))
    book.release(d)
    # 5 declared - a (active) - b (confirmed) - c (admitted since) ; d released
    assert book.live_places() == 2
    assert book.invariant_margin() == 2


def test_admissions_before_the_declaration_no_longer_count():
    book = declared(2)
    (h,) = place(book, 1)
    book.confirm(h)
    book.convert(h, T0 + timedelta(minutes=5))
    assert book.live_places() == 1
    book.declare(declaration(2, at=T0 + timedelta(hours=1)))  # the HAD counted the admission
    assert book.live_places() == 2


def test_place_hold_takes_a_place_until_none_is_left():
    book = declared(2)
    hold = book.place_hold("h1", "r1", T0, HOLD_FOR)
    assert (hold.state, hold.expires_at, hold.placed_under) == (HoldState.ACTIVE, T0 + HOLD_FOR, T0)
    book.place_hold("h2", "r2", T0, HOLD_FOR)
    assert book.live_places() == 0
    with pytest.raises(NoPlaceLeft):
        book.place_hold("h3", "r3", T0, HOLD_FOR)


@pytest.mark.parametrize("status", [CapacityStatus.SATURATED, CapacityStatus.CLOSED])
def test_no_hold_unless_open(status):
    with pytest.raises(NoPlaceLeft):
        declared(3, status=status).place_hold("h1", "r1", T0, HOLD_FOR)


def test_no_hold_without_a_declaration():
    book = HadLedger(FINESS)
    assert book.live_places() == 0
    assert book.invariant_holds()
    with pytest.raises(NoPlaceLeft):
        book.place_hold("h1", "r1", T0, HOLD_FOR)


def test_place_hold_is_idempotent_on_its_id():
    book = declared(2)
    first = book.place_hold("h1", "r1", T0, HOLD_FOR)
    again = book.place_hold("h1", "r1", T0 + timedelta(minutes=1), HOLD_FOR)
    assert again == first
    assert book.live_places() == 1


def test_place_hold_conflicts():
    book = declared(3)
    book.place_hold("h1", "r1", T0, HOLD_FOR)
    with pytest.raises(HoldConflict):
        book.place_hold("h1", "r2", T0, HOLD_FOR)  # same id, other referral
    with pytest.raises(HoldConflict):
        book.place_hold("h2", "r1", T0, HOLD_FOR)  # second live hold for one referral
    book.release("h1")
    book.place_hold("h2", "r1", T0, HOLD_FOR)  # after a release the referral may come back


# ---- transitions -------------------------------------------------------------------------


def test_transitions_are_idempotent_and_illegal_ones_change_nothing():
    book = declared(3)
    a, b = place(book, 2)
    assert book.confirm(a) == book.confirm(a)
    book.release(b)
    version = book.version
    assert book.release(b).state is HoldState.RELEASED  # redelivered
    with pytest.raises(IllegalHoldTransition):
        book.confirm(b)  # accepting a withdrawn offer
    with pytest.raises(IllegalHoldTransition):
        book.convert(b, T0)
    assert book.version == version
    book.convert(a, T0 + timedelta(hours=2))
    with pytest.raises(IllegalHoldTransition):
        book.release(a)  # an admitted patient's place comes back with the next declaration
    assert book.hold(a).converted_at == T0 + timedelta(hours=2)


def test_an_offer_must_be_accepted_before_admission():
    book = declared(1)
    (h,) = place(book, 1)
    with pytest.raises(IllegalHoldTransition):
        book.convert(h, T0)


def test_unknown_hold():
    with pytest.raises(UnknownHold):
        declared(1).confirm("nope")


def test_expiry_releases_only_active_offers_past_their_time():
    book = declared(4)
    a, b, c = place(book, 3)
    book.place_hold("late", "r-late", T0 + timedelta(minutes=20), HOLD_FOR)
    book.confirm(b)
    expired = book.expire_holds(T0 + HOLD_FOR)
    assert [h.hold_id for h in expired] == [a, c]
    assert book.hold("late").state is HoldState.ACTIVE
    assert book.hold(b).state is HoldState.CONFIRMED
    assert book.live_places() == 2


# ---- declarations ------------------------------------------------------------------------


def test_out_of_order_and_duplicate_declarations_are_ignored():
    book = declared(3, at=T0)
    assert not book.declare(declaration(9, at=T0 - timedelta(minutes=1)))
    assert not book.declare(declaration(9, at=T0))
    assert book.declaration.places_available == 3
    assert book.declare(declaration(1, at=T0 + timedelta(minutes=1)))
    assert book.declaration.places_available == 1


def test_a_declaration_for_another_had_is_refused():
    with pytest.raises(ValueError):
        HadLedger(FINESS).declare(CapacityDeclaration("999999998", 1, 1, CapacityStatus.OPEN, T0))


def test_negative_figures_are_refused():
    with pytest.raises(ValueError):
        declaration(-1)


def test_a_shrinking_declaration_keeps_promised_holds_grandfathered():
    book = declared(3)
    a, b, c = place(book, 3)
    book.confirm(a)
    book.declare(declaration(1, at=T0 + timedelta(minutes=10)))
    assert [h.state for h in book.holds] == [HoldState.CONFIRMED, HoldState.ACTIVE, HoldState.ACTIVE]
    assert book.raw_live_places() == -2
    assert book.live_places() == 0
    assert book.invariant_holds()  # all three were promised before the HAD declared 1 place
    # Their admissions do not count against the new declaration either.
    book.confirm(b)
    book.convert(a, T0 + timedelta(minutes=20))
    book.convert(b, T0 + timedelta(minutes=30))
    assert book.promised_under_declaration() == 0
    assert book.invariant_holds()
    with pytest.raises(NoPlaceLeft):
        book.place_hold("new", "r-new", T0 + timedelta(minutes=40), HOLD_FOR)


def test_holds_placed_before_a_late_declaration_arrived_are_grandfathered():
    # Declared at 09:00 but delivered after holds were placed at 09:05 under the old one.
    book = declared(2, at=T0 - timedelta(hours=1))
    place(book, 2, at=T0 + timedelta(minutes=5))
    book.declare(declaration(1, at=T0))
    assert book.promised_under_declaration() == 0
    assert book.invariant_holds()


def test_invariant_margin_reports_the_raw_value():
    book = declared(2)
    place(book, 2)
    assert book.invariant_margin() == 0
    book.promised += 1  # a hold counted without place_hold
    assert book.invariant_margin() == -1
    assert not book.invariant_holds()


def test_version_moves_on_every_effective_change_only():
    book = HadLedger(FINESS)
    book.declare(declaration(2))
    book.place_hold("h1", "r1", T0, HOLD_FOR)
    book.place_hold("h1", "r1", T0, HOLD_FOR)
    book.declare(declaration(2))  # ignored duplicate
    assert book.version == 2


# ---- time --------------------------------------------------------------------------------


def test_staleness():
    book = declared(1)
    assert not book.is_stale(T0 + timedelta(hours=2), timedelta(hours=2))
    assert book.is_stale(T0 + timedelta(hours=2, seconds=1), timedelta(hours=2))
    assert HadLedger(FINESS).is_stale(T0, timedelta(hours=2))


def test_admissions_today_left_counts_confirmed_and_admitted_patients():
    book = declared(5, admissions=3)
    a, b, _ = place(book, 3)
    assert book.admissions_today_left(T0) == 3  # offers not yet accepted do not count
    book.confirm(a)
    book.confirm(b)
    book.convert(b, T0 + timedelta(hours=1))
    assert book.admissions_today_left(T0 + timedelta(hours=2)) == 1
    book.confirm("h2")
    assert book.admissions_today_left(T0 + timedelta(hours=2)) == 0


def test_the_daily_figure_covers_only_the_declarations_day_on_the_hads_clock():
    paris = ZoneInfo("Europe/Paris")
    book = HadLedger(FINESS)
    book.declare(CapacityDeclaration(FINESS, 3, 2, CapacityStatus.OPEN, datetime(2024, 3, 12, 20, 0, tzinfo=paris)))
    assert book.admissions_today_left(datetime(2024, 3, 12, 22, 30, tzinfo=UTC)) == 2  # 23:30 in Paris
    assert book.admissions_today_left(datetime(2024, 3, 12, 23, 30, tzinfo=UTC)) is None  # 00:30 next day
    assert HadLedger(FINESS).admissions_today_left(T0) == 0


def test_a_declaration_may_carry_the_hads_census_within_bounds():
    from reflexe_capacity.domain.capacity import MAX_ACTIVE_PATIENTS, CapacityDeclaration
    at = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
    assert CapacityDeclaration("340780477", 3, 1, CapacityStatus.OPEN, at).active_patients is None  # not declared
    assert CapacityDeclaration("340780477", 3, 1, CapacityStatus.OPEN, at, 0).active_patients == 0
    assert CapacityDeclaration("340780477", 3, 1, CapacityStatus.OPEN, at, MAX_ACTIVE_PATIENTS).active_patients == MAX_ACTIVE_PATIENTS
    for census in (-1, MAX_ACTIVE_PATIENTS + 1):
        with pytest.raises(ValueError, match="active_patients"):
            CapacityDeclaration("340780477", 3, 1, CapacityStatus.OPEN, at, census)


# ---- counts, as the repository loads a ledger ----------------------------------------------


def counts_only(book: HadLedger, *hold_ids: str) -> HadLedger:
    """The ledger as the repository loads it: its counts, and only the holds a command touches."""
    return dataclasses.replace(book, holds=[book.hold(h) for h in hold_ids])


def test_a_ledger_loaded_without_its_holds_decides_on_its_counts():
    book = declared(3)
    a, b = place(book, 2)
    book.confirm(a)
    loaded = counts_only(book)
    assert (loaded.holding, loaded.confirmed, loaded.promised) == (2, 1, 2)
    assert loaded.live_places() == 1
    assert loaded.admissions_today_left(T0) == 4
    loaded.place_hold("h2", "r2", T0, HOLD_FOR)
    assert loaded.live_places() == 0 and loaded.invariant_margin() == 0
    with pytest.raises(NoPlaceLeft):
        loaded.place_hold("h3", "r3", T0, HOLD_FOR)


def test_transitions_of_a_loaded_hold_move_the_counts():
    book = declared(4)
    a, b, c = place(book, 3)
    book.confirm(b)
    book.confirm(c)
    released = counts_only(book, a)
    released.release(a)
    assert (released.holding, released.confirmed, released.promised, released.live_places()) == (2, 2, 2, 2)
    converted = dataclasses.replace(released, holds=[book.hold(b)])  # b as stored, untouched so far
    converted.convert(b, T0 + timedelta(minutes=5))
    # An admission keeps its place until the next declaration, and is still promised under this one.
    assert (converted.holding, converted.confirmed, converted.promised, converted.live_places()) == (1, 1, 2, 2)
    assert converted.conversions == (T0 + timedelta(minutes=5),)
    converted.declare(declaration(4, at=T0 + timedelta(minutes=10)))
    assert (converted.promised, converted.conversions, converted.live_places()) == (0, (), 3)


def test_a_grandfathered_release_does_not_count_against_the_new_declaration():
    book = declared(2)
    (a,) = place(book, 1)
    book.declare(declaration(2, at=T0 + timedelta(minutes=10)))
    book.place_hold("new", "r-new", T0 + timedelta(minutes=11), HOLD_FOR)
    assert (book.holding, book.promised) == (2, 1)
    loaded = counts_only(book, a)
    loaded.release(a)  # its place comes back; it was never promised under this declaration
    assert (loaded.holding, loaded.promised, loaded.live_places(), loaded.invariant_margin()) == (1, 1, 1, 1)


def test_a_conversion_dated_before_the_declaration_does_not_take_a_place():
    book = declared(2, at=T0 + timedelta(hours=1))
    (a,) = place(book, 1, at=T0 + timedelta(hours=1))
    book.confirm(a)
    book.convert(a, T0)  # an admission reported late, dated before the HAD's declaration
    assert (book.holding, book.conversions, book.live_places()) == (0, (), 2)


def test_the_answer_time_median_uses_a_bounded_window_of_recent_answers():
    book = declared(300)
    ids = place(book, 3)
    for n, hold_id in enumerate(ids):
        book.record_answer(hold_id, T0 + timedelta(minutes=n + 1))
    assert book.median_response_seconds(T0 + timedelta(hours=1), timedelta(days=7)) == 120.0
    assert book.median_response_seconds(T0 + timedelta(days=8), timedelta(days=7)) is None  # too old
    times = ResponseTimes()
    for n in range(250):
        times = times.with_answer(T0, T0 + timedelta(seconds=n))
    assert len(times.answers) == 100  # the latest ones only
    assert times.median_seconds(T0, timedelta(days=7)) == 199.5
