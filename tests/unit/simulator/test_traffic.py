"""Traffic: the daily profile and the referral bodies the simulator posts."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

import pytest
from reflexe_capacity.entrypoints.schemas import DeclarationIn
from reflexe_common.privacy import is_pseudonym
from reflexe_referral.entrypoints.schemas import ReferralIn

from reflexe_simulator.actors import PARIS, Counters, HadActor, SimClock, World, traffic_loop
from reflexe_simulator.client import PlatformClient
from reflexe_simulator.scenario import build_scenario
from reflexe_simulator.traffic import (SOURCE_MIX, ReferralFactory, day_arrivals, default_daily_volume, hourly_rates,
                                       intensity)

FORBIDDEN = {"name", "nom", "prenom", "first_name", "last_name", "family_name", "given_name", "ins", "nir", "birth_date",
             "birthdate", "date_of_birth", "dob", "date_naissance", "address", "phone"}


@pytest.fixture(scope="module")
def scenario():
    return build_scenario(["34", "31"], seed=3)


@pytest.mark.parametrize("volume", [1.0, 18.5, 22.1, 200.0])
def test_the_daily_profile_integrates_to_the_daily_volume(volume):
    assert sum(hourly_rates(volume)) == pytest.approx(volume)
    # integrate the intensity function itself, minute by minute
    assert sum(intensity(volume, m / 60) for m in range(24 * 60)) / 60 == pytest.approx(volume)
    for kind, share in SOURCE_MIX.items():
        assert sum(hourly_rates(volume, kind)) == pytest.approx(volume * share)


def test_ed_arrivals_peak_late_morning_and_early_evening_and_ehpad_works_office_hours():
    ed = hourly_rates(100, "ED")
    assert max(range(24), key=lambda h: ed[h]) in (10, 11, 12)
    assert ed[18] > ed[15] > ed[4] and ed[11] > ed[14]
    ehpad = hourly_rates(100, "EHPAD")
    assert sum(ehpad[9:18]) / sum(ehpad) > 0.9 and ehpad[2] == 0


def test_generated_arrivals_average_the_daily_volume():
    rng = random.Random(1)
    midnight = datetime(2025, 3, 10, tzinfo=PARIS)
    days = [day_arrivals(rng, midnight, 20.0) for _ in range(300)]
    assert sum(len(d) for d in days) / 300 == pytest.approx(20.0, rel=0.05)
    assert all(a[0].date() == midnight.date() for d in days for a in d)


def test_default_volume_is_calibrated_per_inhabitant(scenario):
    assert default_daily_volume(scenario.departments["34"].population) == pytest.approx(18.5, abs=0.1)


def _walk_keys(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_keys(item)


def _bodies(scenario, n=400):
    now = datetime.now(UTC)
    out = []
    for code, dept in scenario.departments.items():
        factory = ReferralFactory(dept, random.Random(f"t:{code}"))
        kinds = list(SOURCE_MIX)
        out += [factory.make(kinds[i % len(kinds)], now, now.astimezone(PARIS), 60.0) for i in range(n)]
    return out


def test_referral_bodies_validate_against_the_referral_schema_and_domain_rules(scenario):
    now = datetime.now(UTC)
    for generated in _bodies(scenario):
        parsed = ReferralIn.model_validate(generated.body)
        request = parsed.to_domain(generated.department, str(parsed.referral_id), now)
        assert request.validate() == [], generated.body
        assert generated.body["patient"]["care_commune"] in {c for c, _ in scenario.departments[generated.department].communes}


def test_no_referral_body_carries_a_name_an_ins_or_a_birth_date(scenario):
    for generated in _bodies(scenario):
        keys = {k.lower() for k in _walk_keys(generated.body)}
        assert not keys & FORBIDDEN, keys & FORBIDDEN
        pseudonym = generated.body["patient"]["pseudonym"]
        assert is_pseudonym(pseudonym), pseudonym
        assert isinstance(generated.body["patient"]["birth_year"], int)


def test_clinical_mix_is_realistic(scenario):
    bodies = [g.body for g in _bodies(scenario, n=1500)]
    n = len(bodies)
    palliative = sum(b["clinical"]["main_mpp"] == "04" for b in bodies) / n
    negative = sum(bool(b["avis"]) and not b["avis"]["eligible"] for b in bodies) / n
    within_24h = sum(b["clinical"]["urgency"] == "WITHIN_24H" for b in bodies) / n
    assert 0.20 < palliative < 0.30
    assert 0.05 < negative < 0.11
    assert within_24h > 0.8
    assert all(b["clinical"]["karnofsky"] <= 50 for b in bodies
               if "14" in (b["clinical"]["main_mpp"], *b["clinical"]["associated_mpp"]))
    # Maternity cases and young children run the platform's sex, age and mention rules.
    maternity = [b for b in bodies if b["clinical"]["main_mpp"] in ("19", "21")]
    children = [b for b in bodies if b["clinical"]["main_mpp"] == "22"]
    assert maternity and all(b["patient"]["sex"] == "F" for b in maternity)
    assert children and all(b["patient"]["birth_year"] >= datetime.now(UTC).year - 2 for b in children)


def test_referral_ids_are_deterministic_for_a_seed(scenario):
    now = datetime(2025, 3, 10, 9, tzinfo=UTC)
    dept = scenario.departments["34"]
    a = ReferralFactory(dept, random.Random(5)).make("ED", now, now, 60).body
    b = ReferralFactory(dept, random.Random(5)).make("ED", now, now, 60).body
    assert a == b


def test_capacity_declarations_validate_against_the_capacity_schema(scenario):
    client = PlatformClient("http://r", "http://c", "http://n", tokens=None)  # never called: no request is sent
    world = World(scenario, client, SimClock(datetime.now(PARIS), 60), Counters(), seed=3)
    for had in world.hads.values():
        for _ in range(50):
            body = had.declaration()
            DeclarationIn.model_validate(body)
            assert 0 <= body["places_available"] <= had.spec.authorised_places
            assert body["admissions_possible_today"] <= body["places_available"]
            # A plausible census: every patient in care, and with the free places no more than authorised.
            assert body["active_patients"] == had.background + len(had.active)
            assert body["active_patients"] + body["places_available"] <= had.spec.authorised_places
        assert had.declaration()["active_patients"] >= round(had.spec.authorised_places * 0.5)
    assert isinstance(next(iter(world.hads.values())), HadActor)


class LaggingClock(SimClock):
    """A simulated clock whose every wait ends `lag` late, as a loaded machine's event loop does;
    asked to wait past `until`, it ends the traffic."""

    class Stop(Exception):
        pass

    def __init__(self, start: datetime, lag: timedelta, until: datetime) -> None:
        super().__init__(start, speed=1.0)
        self.at, self.lag, self.until = start, lag, until

    def now(self) -> datetime:
        return self.at

    async def sleep_until(self, sim_time: datetime) -> None:
        if sim_time >= self.until:
            raise self.Stop
        self.at = max(self.at, sim_time) + self.lag
        await asyncio.sleep(0)


async def test_a_late_traffic_loop_posts_every_arrival_of_the_day(scenario):
    """Arrivals already due when the loop wakes late are posted, not skipped (the chaos run posted
    about half its planned volume on a loaded machine)."""
    midnight = datetime(2025, 3, 10, tzinfo=PARIS)
    client = PlatformClient("http://r", "http://c", "http://n", tokens=None)  # never called: the posts are only counted
    clock = LaggingClock(midnight, lag=timedelta(minutes=20), until=midnight + timedelta(days=1))
    world = World(scenario, client, clock, Counters(), seed=3)
    posted = []

    def spawn(coro, **_):
        posted.append(coro)
        coro.close()

    world.spawn = spawn
    volume, seed, department = 200.0, 3, scenario.departments["34"]
    with pytest.raises(LaggingClock.Stop):
        await traffic_loop(world, department, volume, seed)
    planned = day_arrivals(random.Random(f"traffic:{seed}:{department.code}"), midnight, volume)
    assert len(planned) > 150  # a day with arrivals closer together than the loop's lag
    assert len(posted) == len(planned)
