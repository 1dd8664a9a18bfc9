"""The referral's later paths in the simulator, against a fake platform (httpx mock transport): HADs
accepting pending their liaison nurse's evaluation, then confirming or withdrawing; liaison nurses'
avis after posting; referrals posted without consents, updated, then offered; and the counters of
each path the simulated day checks."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import httpx
import jwt
from reflexe_referral.entrypoints.schemas import AvisIn, DeclineIn

from reflexe_simulator.actors import (WITHDRAWAL_REASONS, Counters, TrackedReferral, World, bedside_avis,
                                      post_referral)
from reflexe_simulator.traffic import ReferralFactory
from tests.unit.simulator.test_actors import ClaimsOnlyTokens, _settle, _world


class FakePlatform:
    """Answers every call with success; an unfavourable avis closes the referral (no place held)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict, dict]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        claims = jwt.decode(request.headers["authorization"].split()[1], options={"verify_signature": False})
        body = json.loads(request.content) if request.content else {}
        self.calls.append((request.method, request.url.path, body, claims))
        if request.url.path.endswith("/avis"):
            return httpx.Response(200, json={"status": "REQUESTED" if body["eligible"] else "INELIGIBLE"})
        if request.method == "GET" and request.url.path.startswith("/v1/referrals/"):
            return httpx.Response(200, json={"status": "INCOMPLETE", "version": 1})
        return httpx.Response(201 if request.method == "POST" else 200, json={"status": "REQUESTED"})

    def to(self, suffix: str, method: str = "POST") -> list[tuple[str, str, dict, dict]]:
        return [c for c in self.calls if c[1].endswith(suffix) and c[0] == method]


def _referrals(world: World, n: int, kind: str = "ED", seed: int = 5, **changes) -> list[TrackedReferral]:
    """``n`` referrals of the department, tracked as posted in this run, their body changed as asked."""
    department = world.scenario.departments["34"]
    factory = ReferralFactory(department, random.Random(seed))
    out = []
    for _ in range(n):
        generated = factory.make(kind, datetime.now(UTC), world.clock.now(), world.clock.speed)
        generated = replace(generated, body={**generated.body, **changes}, negative_avis=False)
        out.append(TrackedReferral(generated))
    return out


async def _close(world: World) -> None:
    for task in list(world.tasks):
        task.cancel()
    await world.client.aclose()


async def test_hads_accept_pending_evaluation_only_without_a_favourable_avis_then_confirm_with_the_avis_or_withdraw():
    platform = FakePlatform()
    world, counters = _world(platform)
    had = next(iter(world.hads.values()))
    had.background = 0  # plenty of room
    without = _referrals(world, 150, avis=None)
    favourable = _referrals(world, 50, seed=6, avis={"eligible": True, "reason": None, "text": "avis HAD favorable"})
    hold = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    for i, tracked in enumerate(without + favourable):
        world.referrals[tracked.generated.referral_id] = tracked
        had.on_offer({"referral_id": tracked.generated.referral_id, "offer_id": f"o{i}", "had_finess": had.spec.finess,
                      "hold_until": hold})
    await _settle(world, rounds=500)

    pending = {c[1].split("/")[3] for c in platform.to("/accept-pending-evaluation")}
    accepted = {c[1].split("/")[3] for c in platform.to("/accept")}
    without_ids = {t.generated.referral_id for t in without}
    # Only a referral that has no favourable avis yet is accepted subject to an evaluation; not all of them.
    assert pending <= without_ids and pending
    assert 0.45 < len(pending) / len(pending | (accepted & without_ids)) < 0.75
    assert counters["accepted_pending"] == len(pending) and counters["accepted"] == len(pending | accepted)

    confirmed = {c[1].split("/")[3] for c in platform.to("/evaluation/confirm")}
    withdrawn = platform.to("/evaluation/withdraw")
    # Every pending acceptance ends, once, confirmed or withdrawn (mostly confirmed).
    assert confirmed | {c[1].split("/")[3] for c in withdrawn} == pending and len(confirmed) + len(withdrawn) == len(pending)
    # The run's first visit and one in five after it end in a withdrawal.
    assert len(withdrawn) == (len(pending) + 4) // 5
    visits = [c[1] for c in platform.calls if c[1].endswith(("/evaluation/confirm", "/evaluation/withdraw"))]
    assert visits[0].endswith("/evaluation/withdraw")
    assert (counters["confirmed"], counters["withdrawn"]) == (len(confirmed), len(withdrawn))
    for _, _, body, claims in withdrawn:
        DeclineIn.model_validate(body)
        assert (body["reason"], body["text"]) in {(str(r), t) for r, t, _ in WITHDRAWAL_REASONS}
        assert claims == {"role": "had", "finess": had.spec.finess}
    # A confirmation follows the HAD's liaison nurse's avis, given with her own token and scope.
    avis = platform.to("/avis")
    assert {c[1].split("/")[3] for c in avis} == confirmed and counters["avis_after_posting"] == len(confirmed)
    for _, _, body, claims in avis:
        assert AvisIn.model_validate(body).eligible
        assert claims == {"role": "liaison", "finess": had.spec.finess, "department": "34"}
    order = [(c[1].split("/")[3], c[1].rsplit("/", 1)[1]) for c in platform.calls if c[0] == "POST"]
    for rid in confirmed:
        steps = [step for r, step in order if r == rid]
        # Then the admission (or, for a few, the source cancels: the patient's condition changed).
        assert steps[steps.index("avis"):] in (["avis", "confirm", "admission", "discharge"], ["avis", "confirm", "cancel"])
    # Only confirmed (or directly accepted) patients are admitted: a withdrawn acceptance frees the place.
    admitted = {c[1].split("/")[3] for c in platform.to("/admission")}
    assert admitted <= confirmed | accepted and not admitted & {c[1].split("/")[3] for c in withdrawn}
    assert not had.pending & {c[1].split("/")[3] for c in withdrawn}
    await _close(world)


async def test_an_had_answering_through_fhir_never_accepts_pending_evaluation():
    platform = FakePlatform()
    world, counters = _world(platform)
    had = next(iter(world.hads.values()))
    world.doors = replace(world.doors, fhir_hads=frozenset({had.spec.finess}))
    assert all(not had.evaluates_first(t) for t in _referrals(world, 50, avis=None))
    await _close(world)


async def test_the_next_offer_after_a_withdrawal_or_after_the_consents_is_counted_once_and_an_incomplete_one_as_a_fault():
    platform = FakePlatform()
    world, counters = _world(platform)
    first, second = list(world.hads.values())[:2]
    second.background = second.spec.authorised_places  # full: it declines, whatever the offer
    withdrawn, completed, incomplete = _referrals(world, 3)
    withdrawn.withdrawn_by.add(first.spec.finess)
    completed.posted_incomplete = completed.completing = True
    incomplete.posted_incomplete = True  # its consents never sent: the platform must not offer it
    hold = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    for tracked in (withdrawn, completed, incomplete):
        world.referrals[tracked.generated.referral_id] = tracked
        for n in range(2):
            second.on_offer({"referral_id": tracked.generated.referral_id, "offer_id": f"{tracked.generated.referral_id}/{n}",
                             "had_finess": second.spec.finess, "hold_until": hold})
    # The HAD that withdrew offered it again (a desk's choice) is not "another HAD".
    again = _referrals(world, 1, seed=9)[0]
    again.withdrawn_by.add(first.spec.finess)
    world.referrals[again.generated.referral_id] = again
    first.on_offer({"referral_id": again.generated.referral_id, "offer_id": "x", "had_finess": first.spec.finess,
                    "hold_until": hold})
    assert (counters["offered_after_withdrawal"], counters["offered_after_update"], counters["offered_while_incomplete"]) == (1, 1, 1)
    # The search went on after the withdrawal: an offer to another HAD, or the desk alerted when none can.
    assert counters["searched_after_withdrawal"] == 1 and counters["searched_after_update"] == 1
    alone = _referrals(world, 1, seed=11)[0]
    alone.withdrawn_by.add(first.spec.finess)
    world.referrals[alone.generated.referral_id] = alone
    world.desks["34"].escalated(alone.generated.referral_id, "aucune autre HAD")
    assert counters["searched_after_withdrawal"] == 2 and counters["offered_after_withdrawal"] == 1
    await _settle(world)
    await _close(world)


async def test_liaison_nurses_give_the_avis_of_referrals_posted_without_one_some_unfavourable_which_closes_them():
    platform = FakePlatform()
    world, counters = _world(platform)
    department = world.scenario.departments["34"]
    searching = _referrals(world, 200, avis=None)
    accepted = _referrals(world, 10, seed=7, avis=None)
    for tracked in accepted:
        tracked.status = "ACCEPTED"  # its HAD's own liaison nurse evaluates it
    for tracked in searching + accepted:
        world.referrals[tracked.generated.referral_id] = tracked
        await bedside_avis(world, tracked.generated)
    avis = platform.to("/avis")
    assert {c[1].split("/")[3] for c in avis} == {t.generated.referral_id for t in searching}
    unfavourable = [c for c in avis if not c[2]["eligible"]]
    assert 0.03 < len(unfavourable) / len(avis) < 0.2
    for _, path, body, claims in avis:
        AvisIn.model_validate(body)
        assert (body["reason"] is None) == body["eligible"]
        # The nurse of the HAD serving the patient's commune, in its department.
        commune = world.referrals[path.split("/")[3]].generated.body["patient"]["care_commune"]
        had = department.had(claims["finess"])
        assert had is not None and commune in had.zone_communes and claims["department"] == "34"
    assert (counters["avis_after_posting"], counters["avis_ineligible"], counters["avis_updated"]) == \
        (len(avis), len(unfavourable), 0)
    closed = {c[1].split("/")[3] for c in unfavourable}
    assert {rid for rid, t in world.referrals.items() if t.status == "INELIGIBLE"} == closed
    # Given once: a second visit to the same referral updates nothing.
    await bedside_avis(world, searching[0].generated)
    assert len(platform.to("/avis")) == len(avis)
    await _close(world)


async def test_posted_referrals_count_planned_and_incomplete_ones_and_the_incomplete_get_their_consents():
    platform = FakePlatform()
    world, counters = _world(platform)
    planned = _referrals(world, 5, seed=11)
    for tracked in planned:
        tracked.generated.body["clinical"]["planned_date"] = "2025-03-12"
    lacking = _referrals(world, 40, seed=12, avis=None,
                         conditions={"patient_consent": True, "gp_agreement": False, "caregiver_present": True})
    for tracked in planned + lacking:
        await post_referral(world, tracked.generated)
    await _settle(world, rounds=500)
    assert counters["referrals_posted"] == 45 and counters["planned_posted"] >= 5
    assert counters["incomplete_posted"] == 40
    assert all(world.referrals[t.generated.referral_id].posted_incomplete for t in lacking)
    updates = platform.to("/request", "PATCH")
    cancels = platform.to("/cancel")
    # Most hospitals send the GP's agreement hours later (on the version they read); a few cancel.
    assert counters["completed"] == len(updates) and len(updates) > len(cancels) > 0
    for _, _, body, claims in updates:
        assert body == {"conditions": {"patient_consent": True, "gp_agreement": True}} and claims["role"] == "hospital"
    await _close(world)
