"""Communes and departments a test owns: each handed out once per run, from the COG data.

The suite shares one database and one broker. A referral is offered to the HADs whose zone covers
its care commune, and a desk's list, a department's stream or an indicator reads a whole
department: two tests writing into one commune or one department see each other's data, and pass
or fail by the order they run in. So a test module asks here for the communes it registers HADs
on and posts referrals into, and for any department whose whole content it reads; no two callers
are handed the same one, and any subset of the suite passes in any order.

Communes come from departments the tests share out commune by commune (COMMUNE_DEPARTMENTS: the
Hérault, whose desk most tests impersonate, and its neighbours); whole departments come from the
others, on Paris time unless the caller asks for another clock.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable

from reflexe_common.geography import Department, Geography
from tests.support.data import MONTPELLIER, SETE, TOULOUSE

# Shared out commune by commune, never handed whole.
COMMUNE_DEPARTMENTS = frozenset({"34", "31", "30"})
# The request bodies' default communes: anyone posts there, so nobody owns them.
SHARED_COMMUNES = frozenset({MONTPELLIER, SETE, TOULOUSE})

# A generator of its own: pytest-randomly reseeds the global one before every test, which would
# hand every module the same "random" communes. Seeded afresh each run, so that a run against a
# database an earlier run left (REFLEXE_TEST_DATABASE_URL) most likely meets none of its communes.
_rng = random.Random(uuid.uuid4().int)
_handed_communes: set[str] = set()
_handed_departments: set[str] = set()


def own_communes(count: int, department: str = "34") -> list[str]:
    """`count` communes of `department` that nobody else in this run is handed."""
    if department not in COMMUNE_DEPARTMENTS and department not in _handed_departments:
        raise ValueError(f"department {department} is not shared out by commune: own it first (own_department)")
    free = [c.insee_code for c in Geography.load().communes_of_department(department)
            if c.insee_code not in _handed_communes and c.insee_code not in SHARED_COMMUNES]
    if len(free) < count:
        raise LookupError(f"only {len(free)} communes of {department} left for {count} asked")
    chosen = _rng.sample(free, count)
    _handed_communes.update(chosen)
    return chosen


def own_commune(department: str = "34") -> str:
    return own_communes(1, department)[0]


def on_paris_time(department: Department) -> bool:
    return department.time_zone.key == "Europe/Paris"


def own_department(where: Callable[[Department], bool] = on_paris_time) -> str:
    """A department nobody else in this run is handed, among those `where` accepts (by default
    metropolitan France and Corsica, whose clock is Paris time): its desk, lists, streams and
    indicators show only the caller's data.

    The most populous go first, so that a caller wanting a particular one (a small department for
    a short simulated day, an overseas clock) still finds it free, whatever the order of imports."""
    geography = Geography.load()
    candidates = [d for d in geography.departments.values()
                  if d.code not in COMMUNE_DEPARTMENTS and d.code not in _handed_departments and where(d)]
    if not candidates:
        raise LookupError("no free department fits")
    chosen = max(candidates, key=lambda d: (d.population, d.code))
    _handed_departments.add(chosen.code)
    return chosen.code


def own_named_department(code: str) -> str:
    """Department `code` itself, when a test needs that one (its size, its clock): refused if
    another caller was handed it."""
    if code in _handed_departments or code in COMMUNE_DEPARTMENTS:
        raise LookupError(f"department {code} is already someone else's")
    if Geography.load().department(code) is None:
        raise ValueError(f"unknown department {code}")
    _handed_departments.add(code)
    return code
