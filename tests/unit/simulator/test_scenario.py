"""The simulator's scenario: deterministic, every commune covered, valid FINESS, valid registry bodies."""

from __future__ import annotations

import dataclasses

import pytest
from reflexe_capacity.domain.registry import authorisation_problems
from reflexe_capacity.entrypoints.schemas import HadIn
from reflexe_common.geography import Geography
from reflexe_common.vocabulary import MPP_CODES, Mention

from reflexe_common.finess import is_finess
from reflexe_simulator.scenario import build_scenario, fictional_finess

DEPARTMENTS = ["34", "31"]


@pytest.fixture(scope="module")
def scenario():
    return build_scenario(DEPARTMENTS, seed=7)


def test_the_scenario_is_deterministic_for_a_seed(scenario):
    again = build_scenario(DEPARTMENTS, seed=7)
    assert dataclasses.asdict(again) == dataclasses.asdict(scenario)
    other = build_scenario(DEPARTMENTS, seed=8)
    assert dataclasses.asdict(other) != dataclasses.asdict(scenario)


@pytest.mark.parametrize("code", DEPARTMENTS)
def test_every_commune_of_the_department_is_covered_by_at_least_one_had(scenario, code):
    communes = {c.insee_code for c in Geography.load().communes_of_department(code)}
    zones = [set(h.zone_communes) for h in scenario.departments[code].hads]
    assert set().union(*zones) == communes
    # ...with some overlap around the prefecture (the department's largest commune), no commune outside.
    assert sum(len(z) for z in zones) > len(communes)
    assert all(z <= communes for z in zones)


def test_finess_numbers_are_syntactically_valid_unique_and_carry_the_department(scenario):
    seen = []
    for code, dept in scenario.departments.items():
        for finess in [h.finess for h in dept.hads] + [s.finess for s in (*dept.hospitals, *dept.ehpads, *dept.gps)]:
            assert is_finess(finess), finess  # the check key included
            assert finess.startswith(code) and len(finess) == 9
            seen.append(finess)
    assert len(seen) == len(set(seen))
    assert is_finess(fictional_finess("2A", "HAD", 3)) and is_finess(fictional_finess("971", "EHPAD", 12))


def test_hads_are_plausible(scenario):
    for dept in scenario.departments.values():
        assert 3 <= len(dept.hads) <= 5
        assert 2 <= len(dept.hospitals) <= 4
        assert sum(Mention.READAPTATION in h.mentions for h in dept.hads) == 1
        # One perinatal HAD per department takes the maternity cases and the children under 3.
        [perinatal] = [h for h in dept.hads if Mention.ANTE_POST_PARTUM in h.mentions]
        assert Mention.ENFANTS_MOINS_3_ANS in perinatal.mentions and {"19", "21", "22"} <= set(perinatal.mpp_supported)
        ehpads = {e.finess for e in dept.ehpads}
        for had in dept.hads:
            assert had.name.startswith("HAD ")
            assert Mention.SOCLE in had.mentions
            assert 20 <= had.authorised_places <= 120
            assert set(had.mpp_supported) <= MPP_CODES
            assert set(had.ehpad_conventions) <= ehpads
            assert had.anchor_commune in had.zone_communes
    names = {h.name for h in scenario.departments["34"].hads}
    assert "HAD Montpellier Métropole" in names


def test_registry_bodies_validate_against_the_capacity_schema(scenario):
    for had in scenario.hads:
        parsed = HadIn.model_validate(had.registry_body())
        assert authorisation_problems(parsed.mentions, parsed.mpp_supported) == []
        assert parsed.to_domain(had.finess).zone_communes == frozenset(had.zone_communes)


def test_an_unknown_department_is_refused():
    with pytest.raises(ValueError):
        build_scenario(["99"], seed=1)
