"""Who sees a referral, and how much of it (docs/security.md), on histories folded from events:
an HAD sees it while the current offer is its own or once it took the patient, never after its
offer expired, was declined or went to another; it sees only its own part of the explanation and
of the timeline; the ARS reads no referral row."""

from __future__ import annotations

from datetime import timedelta

from reflexe_common.auth import Principal, Role
from reflexe_referral.domain import Referral
from reflexe_referral.entrypoints.api import _events_for, _may_see, _steers, _view_for
from tests.unit.referral.conftest import REQUESTED_AT, make_request

X, Y = "340000116", "340000298"
HAD_X, HAD_Y = Principal(Role.HAD, "x", finess=X), Principal(Role.HAD, "y", finess=Y)
DESK_34, DESK_31 = Principal(Role.DESK, "d", department="34"), Principal(Role.DESK, "d", department="31")
HOSPITAL, OTHER_HOSPITAL = Principal(Role.HOSPITAL, "h", finess="340780477"), Principal(Role.HOSPITAL, "o", finess="340000371")
ARS, ADMIN = Principal(Role.ARS, "a", region="76"), Principal(Role.ADMIN, "root")
EXPLANATION = (f"Proposé à HAD X ({X}) : déclaration fraîche, 3/40 places libres, réponse médiane 12 min; "
               f"ensuite : HAD Y; exclus : HAD Z (zone).")


def at(minutes: int):
    return REQUESTED_AT + timedelta(minutes=minutes)


def history():
    referral = Referral.from_events(Referral.request(make_request(), REQUESTED_AT))
    events = list(Referral.request(make_request(), REQUESTED_AT))

    def step(decision):
        new = decision(referral)
        for event in new:
            referral.apply(event)
        events.extend(new)

    return referral, events, step


def offer(had: str, offer_id: str, minute: int):
    return lambda r: r.record_offer(offer_id, had, at(minute + 30), EXPLANATION if had == X else
                                    f"Proposé à HAD Y ({Y}) : déclaration fraîche.", False, at(minute), '{"ranked": []}')


def test_an_had_sees_its_current_offer_only_with_its_own_part_of_the_explanation():
    referral, events, step = history()
    step(offer(X, "o1", 1))
    assert _may_see(HAD_X, referral) and not _may_see(HAD_Y, referral)
    view = _view_for(HAD_X, referral)
    assert view["current_offer"]["explanation"] == f"Proposé à HAD X ({X}) : déclaration fraîche, 3/40 places libres, réponse médiane 12 min."
    assert view["tried_hads"] == [X]
    assert _view_for(DESK_34, referral)["current_offer"]["explanation"] == EXPLANATION
    timeline = _events_for(HAD_X, events)
    assert [type(e).__name__ for e in timeline] == ["ReferralRequested", "OfferMade"]


def test_an_expired_or_declined_offer_hides_the_referral_from_its_had():
    referral, events, step = history()
    step(offer(X, "o1", 1))
    step(lambda r: r.expire("o1", at(40)))
    assert not _may_see(HAD_X, referral), "expired: no longer X's"
    step(offer(Y, "o2", 41))
    assert not _may_see(HAD_X, referral) and _may_see(HAD_Y, referral)
    assert _view_for(HAD_Y, referral)["tried_hads"] == [Y]
    assert all(getattr(e, "had_finess", Y) == Y for e in _events_for(HAD_Y, events)), "nothing about X"
    step(lambda r: r.decline("o2", Y, "NO_CAPACITY", "équipe complète", at(45)))
    assert not _may_see(HAD_Y, referral), "declined: no longer Y's"


def test_the_had_that_took_the_patient_keeps_seeing_it():
    referral, _, step = history()
    step(offer(X, "o1", 1))
    step(lambda r: r.accept("o1", X, at(5)))
    assert _may_see(HAD_X, referral)
    step(lambda r: r.admit(X, at(60)))
    assert _may_see(HAD_X, referral) and not _may_see(HAD_Y, referral)


def test_hospitals_desks_admins_and_the_ars():
    referral, _, _ = history()
    assert _may_see(HOSPITAL, referral) and not _may_see(OTHER_HOSPITAL, referral)
    assert _may_see(DESK_34, referral) and not _may_see(DESK_31, referral)
    assert _may_see(ADMIN, referral)
    assert not _may_see(ARS, referral), "the ARS reads indicators, not rows"


def test_own_explanation_keeps_the_hads_own_sentence_only():
    from reflexe_common.visibility import own_explanation

    assert own_explanation(EXPLANATION, X) == f"Proposé à HAD X ({X}) : déclaration fraîche, 3/40 places libres, réponse médiane 12 min."
    assert own_explanation(EXPLANATION, Y) == "", "a sentence proposing another HAD says nothing to this one"
    assert own_explanation(f"Proposé à HAD Y ({Y}) : déclaration fraîche.", Y) == f"Proposé à HAD Y ({Y}) : déclaration fraîche."


def test_a_neighbouring_desk_sees_a_referral_only_once_widened_to_it_and_never_steers_it():
    referral, _, step = history()
    desk_30, desk_12 = Principal(Role.DESK, "d", department="30"), Principal(Role.DESK, "d", department="12")
    assert not _may_see(desk_30, referral)
    step(lambda r: r.widen(["30"], at(10)))
    assert _may_see(desk_30, referral) and _may_see(DESK_34, referral)
    assert not _may_see(desk_12, referral) and not _may_see(DESK_31, referral)  # only the departments widened to
    assert _steers(DESK_34, referral) and not _steers(desk_30, referral)
    assert _steers(ADMIN, referral)
