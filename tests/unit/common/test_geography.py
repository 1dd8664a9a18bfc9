"""Unit tests for reflexe_common.geography (offline French geography data)."""

from __future__ import annotations

import csv
import io
from importlib import resources

import pytest

from reflexe_common.geography import Commune, Department, Geography, is_department_code

OCCITANIE = {"09", "11", "12", "30", "31", "32", "34", "46", "48", "65", "66", "81", "82"}
METROPOLITAN = {f"{n:02d}" for n in range(1, 96) if n != 20} | {"2A", "2B"}
OVERSEAS = {"971", "972", "973", "974", "976"}


@pytest.fixture(scope="module")
def geo() -> Geography:
    return Geography.load()


def _neighbour_rows() -> list[tuple[str, str]]:
    text = resources.files("reflexe_common.geography").joinpath("data", "neighbours.csv").read_text("utf-8")
    return [(r["department_code"], r["neighbour_code"]) for r in csv.DictReader(io.StringIO(text))]


def test_load_is_cached_singleton() -> None:
    assert Geography.load() is Geography.load()


def test_montpellier(geo: Geography) -> None:
    montpellier = geo.commune("34172")
    assert isinstance(montpellier, Commune)
    assert montpellier.name == "Montpellier"
    assert montpellier.department_code == "34"
    assert montpellier.region_code == "76"
    assert montpellier.population is not None and montpellier.population > 250_000
    assert geo.department_of("34172") == "34"


def test_toulouse(geo: Geography) -> None:
    assert geo.department_of("31555") == "31"
    assert geo.commune("31555").name == "Toulouse"


def test_corsica_code(geo: Geography) -> None:
    assert geo.department_of("2A004") == "2A"  # Ajaccio
    assert geo.department_of("2B033") == "2B"  # Bastia


def test_unknown_codes_return_none(geo: Geography) -> None:
    assert geo.commune("00000") is None
    assert geo.commune("") is None
    assert geo.department_of("99999") is None
    assert geo.department("20") is None
    assert geo.department("00") is None
    assert geo.neighbours("00") == frozenset()
    assert geo.departments_of_region("00") == []
    assert geo.communes_of_department("00") == []


@pytest.mark.parametrize(
    ("insee", "dept", "commune"),
    [("75101", "75", "75056"), ("75120", "75", "75056"), ("69381", "69", "69123"), ("13201", "13", "13055")],
)
def test_municipal_arrondissements(geo: Geography, insee: str, dept: str, commune: str) -> None:
    assert geo.department_of(insee) == dept
    arr = geo.commune(insee)
    assert arr is not None and arr.population is not None and arr.population > 0
    assert geo.commune(commune) is not None  # the commune itself is there too


def test_occitanie_has_13_departments(geo: Geography) -> None:
    depts = geo.departments_of_region("76")
    assert {d.code for d in depts} == OCCITANIE
    assert [d.code for d in depts] == sorted(d.code for d in depts)
    assert all(isinstance(d, Department) and d.region_code == "76" for d in depts)


def test_department_populations_plausible(geo: Geography) -> None:
    herault = geo.department("34")
    assert herault is not None and herault.name == "Hérault"
    assert herault.population > 1_000_000
    assert geo.department("75").population > 2_000_000
    assert geo.department("59").population > 2_500_000  # Nord, the most populous
    assert 50_000 < geo.department("48").population < 100_000  # Lozère, the least populous
    total = sum(geo.department(c).population for c in METROPOLITAN | OVERSEAS)
    assert 60_000_000 < total < 72_000_000


def test_all_real_departments_present(geo: Geography) -> None:
    for code in METROPOLITAN | OVERSEAS:
        assert geo.department(code) is not None, code
        assert geo.communes_of_department(code), code


def test_communes_of_department(geo: Geography) -> None:
    herault = geo.communes_of_department("34")
    assert 300 < len(herault) < 400
    codes = [c.insee_code for c in herault]
    assert codes == sorted(codes)
    assert "34172" in codes
    assert all(c.department_code == "34" for c in herault)


def test_neighbours_examples(geo: Geography) -> None:
    assert geo.neighbours("34") == {"11", "12", "30", "81"}
    assert geo.neighbours("31") == {"09", "11", "32", "65", "81", "82"}
    assert geo.neighbours("66") == {"09", "11"}
    assert geo.neighbours("12") == {"15", "30", "34", "46", "48", "81", "82"}
    assert geo.neighbours("75") == {"92", "93", "94"}
    assert geo.neighbours("2A") == {"2B"}
    assert isinstance(geo.neighbours("34"), frozenset)


def test_occitanie_neighbours_cover_other_regions(geo: Geography) -> None:
    assert geo.neighbours("30") == {"07", "12", "13", "34", "48", "84"}
    assert geo.neighbours("48") == {"07", "12", "15", "30", "43"}
    assert geo.neighbours("32") == {"31", "40", "47", "64", "65", "82"}
    assert geo.neighbours("46") == {"12", "15", "19", "24", "47", "82"}


def test_neighbour_table_symmetric_and_known(geo: Geography) -> None:
    rows = _neighbour_rows()
    pairs = set(rows)
    assert len(pairs) == len(rows), "duplicate rows in neighbours.csv"
    for a, b in pairs:
        assert a != b
        assert (b, a) in pairs, f"{a},{b} listed but not {b},{a}"
        assert is_department_code(a) and is_department_code(b), (a, b)
        assert geo.department(a) is not None and geo.department(b) is not None, (a, b)
    for code in geo.departments:
        for other in geo.neighbours(code):
            assert code in geo.neighbours(other)


def test_neighbour_table_covers_metropole(geo: Geography) -> None:
    for code in METROPOLITAN:
        assert geo.neighbours(code), code
        assert geo.neighbours(code) <= METROPOLITAN
    for code in OVERSEAS:
        assert geo.neighbours(code) == frozenset()


@pytest.mark.parametrize("code", ["01", "09", "19", "21", "95", "2A", "2B", "971", "974", "976"])
def test_is_department_code_true(code: str) -> None:
    assert is_department_code(code)


@pytest.mark.parametrize("code", ["", "0", "1", "00", "20", "96", "99", "2C", "2a", "970", "977", "984", " 34", "034"])
def test_is_department_code_false(code: str) -> None:
    assert not is_department_code(code)
