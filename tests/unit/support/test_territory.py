"""The allocator of communes and departments that test modules own (tests/support/territory.py)."""

from __future__ import annotations

import pytest

from reflexe_common.geography import Geography
from tests.support.data import MONTPELLIER
from tests.support import territory
from tests.support.territory import (COMMUNE_DEPARTMENTS, SHARED_COMMUNES, own_commune, own_communes,
                                     own_department, own_named_department)


def test_communes_are_handed_out_once_from_their_department_never_the_shared_defaults():
    geography = Geography.load()
    first, second = own_communes(10), own_communes(10)
    handed = first + second
    assert len(set(handed)) == 20
    assert all(geography.commune(c).department_code == "34" for c in handed)
    assert not set(handed) & SHARED_COMMUNES and MONTPELLIER in SHARED_COMMUNES
    assert geography.commune(own_commune("31")).department_code == "31"


def test_a_department_is_handed_out_whole_once_and_never_one_shared_out_by_commune():
    geography = Geography.load()
    first, second = own_department(), own_department()
    assert first != second and not {first, second} & COMMUNE_DEPARTMENTS
    assert geography.department(first).time_zone.key == "Europe/Paris"
    # Its communes are its owner's to share among its own tests.
    assert geography.commune(own_commune(first)).department_code == first
    overseas = own_department(lambda d: d.time_zone.key == "Indian/Mayotte")
    assert overseas == "976"
    with pytest.raises(LookupError):
        own_named_department("976")
    with pytest.raises(LookupError):
        own_named_department("34")


def test_communes_of_a_department_nobody_owns_are_refused():
    unowned = next(d for d in Geography.load().departments
                   if d not in COMMUNE_DEPARTMENTS and d not in territory._handed_departments)
    with pytest.raises(ValueError):
        own_communes(1, unowned)
