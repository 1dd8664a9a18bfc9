"""HADs answer within the hold they were given (a few on purpose after it), whatever the demo
speed, the platform's hold setting and the time the offer took to reach them; an answer that
outruns the platform's record of its offer is sent again; a POST retried after a lost answer
sends the same bytes and a replayed 200 counts as posted."""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime, timedelta

import httpx
import jwt

from reflexe_simulator.actors import (ANSWER_MARGIN_SECONDS, LATE_SHARE_DAY, LATE_SHARE_NIGHT, PARIS, Counters,
                                      SimClock, World, answer_timing, post_referral)
from reflexe_simulator.client import PlatformClient
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.traffic import ReferralFactory

DRAWS = 20_000


class ClaimsOnlyTokens:
    async def fetch(self, role, *, finess=None, department=None):
        claims = {"role": role, **({"finess": finess} if finess else {}), **({"department": department} if department else {})}
        return jwt.encode(claims, None, algorithm="none"), float("inf")


def _draws(hold_left: float, speed: float, night: bool, hold_minutes: float = 30.0):
    rng = random.Random(7)
    return [answer_timing(rng, hold_left, speed, night, hold_minutes) for _ in range(DRAWS)]


def test_at_demo_speed_most_answers_land_well_within_the_hold_and_a_few_after_it():
    # ./reflexe up at 240x: a 7.5 s hold, of which the offer's journey used 2.5 s.
    hold_left = 5.0
    timings = _draws(hold_left, 240, night=False)
    late = [t for t in timings if t.late]
    on_time = [t for t in timings if not t.late]
    assert abs(len(late) / DRAWS - LATE_SHARE_DAY) < 0.01
    assert all(t.real_delay > hold_left for t in late)  # really after the hold
    assert all(t.real_delay <= hold_left - ANSWER_MARGIN_SECONDS for t in on_time)
    # Well within: typically a third of the usable window, not at its edge.
    usable = hold_left - ANSWER_MARGIN_SECONDS
    assert 0.25 * usable < statistics.median(t.real_delay for t in on_time) < 0.45 * usable
    assert sum(t.real_delay > 0.8 * usable for t in on_time) / len(on_time) < 0.1
    # What the output says is the same delay in simulated minutes.
    assert all(abs(t.sim_minutes - t.real_delay * 240 / 60) < 1e-9 for t in timings)


def test_nights_are_slower_and_later_but_still_mostly_within_the_hold():
    day, night = _draws(5.0, 240, night=False), _draws(5.0, 240, night=True)
    night_late = sum(t.late for t in night) / DRAWS
    assert abs(night_late - LATE_SHARE_NIGHT) < 0.012
    assert night_late < 0.15
    median_day = statistics.median(t.real_delay for t in day if not t.late)
    median_night = statistics.median(t.real_delay for t in night if not t.late)
    assert median_night > median_day


def test_an_unscaled_platform_hold_still_gives_answers_within_the_simulated_hold():
    # A platform left at its real 30-minute hold, the simulator at 60x: the HADs' world still
    # has a 30-minute hold, so on-time answers come within 30 simulated minutes (30 real s).
    timings = _draws(1800.0, 60, night=False)
    on_time = [t for t in timings if not t.late]
    assert all(t.sim_minutes <= 30 for t in on_time)
    assert 8 < statistics.median(t.sim_minutes for t in on_time) < 13
    assert all(t.real_delay > 1800 for t in timings if t.late)


def test_an_offer_that_reaches_the_had_with_no_usable_hold_left_is_answered_at_once():
    timings = _draws(0.5, 240, night=False)
    assert all(t.real_delay == 0 for t in timings if not t.late)


def _world(handler, speed=240.0):
    counters = Counters()
    client = PlatformClient("http://ref", "http://cap", "http://not", ClaimsOnlyTokens(), counters, attempts=3,
                            backoff=0, transport=httpx.MockTransport(handler))
    world = World(build_scenario(["34"], seed=2), client, SimClock(datetime(2025, 3, 10, 10, tzinfo=PARIS), speed),
                  counters, seed=2)
    return world, counters


async def test_an_answer_that_outruns_the_platforms_record_of_the_offer_is_sent_again_while_held():
    answers: list[str] = []

    def platform(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/accept"):
            answers.append(request.url.path)
            if len(answers) == 1:  # the referral service has not consumed the offer yet
                return httpx.Response(409, json={"code": "NO_CURRENT_OFFER", "status": 409})
        return httpx.Response(200, json={})

    world, counters = _world(platform)
    had = next(iter(world.hads.values()))
    hold_until = datetime.now(UTC) + timedelta(seconds=10)
    await had.answer("00000000-0000-4000-8000-000000000001", "o1", "accept", None, 5.0, hold_until)
    assert len(answers) == 2
    assert counters["accepted"] == 1 and counters["late_answers"] == 0
    for task in list(world.tasks):
        task.cancel()
    await world.client.aclose()


async def test_an_expired_hold_is_not_retried_and_counts_as_a_late_answer():
    answers: list[str] = []

    def platform(request: httpx.Request) -> httpx.Response:
        answers.append(request.url.path)
        return httpx.Response(409, json={"code": "NO_CURRENT_OFFER", "status": 409})

    world, counters = _world(platform)
    had = next(iter(world.hads.values()))
    await had.answer("00000000-0000-4000-8000-000000000002", "o2", "accept", None, 40.0,
                     datetime.now(UTC) - timedelta(seconds=1))
    assert len(answers) == 1 and counters["late_answers"] == 1 and counters["accepted"] == 0
    await world.client.aclose()


async def test_a_post_whose_answer_was_lost_is_retried_byte_for_byte_and_a_replayed_200_counts_as_posted():
    bodies: list[bytes] = []

    def platform(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) == 1:  # created, but the answer never reaches the hospital
            raise httpx.ReadTimeout("answer lost", request=request)
        return httpx.Response(200, json={"referral_id": json.loads(request.content)["referral_id"]})

    world, counters = _world(platform)
    department = world.scenario.departments["34"]
    generated = ReferralFactory(department, random.Random(3)).make("ED", datetime.now(UTC), world.clock.now(), 240.0)
    await post_referral(world, generated)
    assert len(bodies) == 2 and bodies[0] == bodies[1]
    assert json.loads(bodies[1])["requested_at"] == generated.body["requested_at"]
    assert counters["referrals_posted"] == 1 and counters["http_409"] == 0
    for task in list(world.tasks):
        task.cancel()
    await world.client.aclose()


async def test_a_referral_posted_without_gp_agreement_is_completed_later_on_the_version_read():
    calls: list[tuple[str, str, str | None]] = []
    versions = iter([4, 5])  # a clock moved it between the first read and its update

    def platform(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, request.headers.get("If-Match")))
        if request.method == "GET":
            return httpx.Response(200, json={"referral_id": "r", "status": "INCOMPLETE", "version": next(versions)})
        if request.headers["If-Match"] == '"4"':
            return httpx.Response(412, json={"code": "STALE_VERSION", "status": 412})
        assert json.loads(request.content) == {"conditions": {"patient_consent": True, "gp_agreement": True}}
        return httpx.Response(200, json={"referral_id": "r", "status": "REQUESTED", "version": 7})

    world, counters = _world(platform)
    result = await world.client.update_conditions("349100016", "r", {"patient_consent": True, "gp_agreement": True})
    assert result.ok and result.data["status"] == "REQUESTED"
    assert [(m, h) for m, _, h in calls] == [("GET", None), ("PATCH", '"4"'), ("GET", None), ("PATCH", '"5"')]
    assert calls[1][1] == "/v1/referrals/r/request"
    assert counters["http_errors"] == 0  # a stale version read again is no failure
    await world.client.aclose()
