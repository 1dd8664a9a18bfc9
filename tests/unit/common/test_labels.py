"""The French labels of the vocabulary: each table names every value of its vocabulary and no other,
so a page, an alert or an explanation never shows a raw code nor knows a value the platform lacks."""

from __future__ import annotations

import dataclasses
from enum import StrEnum

import pytest

from reflexe_common import labels
from reflexe_common.vocabulary import CapacityStatus, Equipment, Mention, PlaceOfCare, Reason, Sex, SourceKind, Urgency
from reflexe_referral.domain.model import Status
from reflexe_referral.domain.values import Conditions


@pytest.mark.parametrize(("table", "vocabulary"), [
    (labels.URGENCY_FR, Urgency), (labels.CAPACITY_STATUS_FR, CapacityStatus), (labels.SOURCE_FR, SourceKind),
    (labels.PLACE_FR, PlaceOfCare), (labels.SEX_FR, Sex), (labels.EQUIPMENT_FR, Equipment),
    (labels.MENTION_FR, Mention), (labels.REASON_FR, Reason), (labels.REFERRAL_STATUS_FR, Status),
])
def test_each_table_labels_exactly_the_values_of_its_vocabulary(table: dict[str, str],
                                                                 vocabulary: type[StrEnum]) -> None:
    assert set(table) == {v.value for v in vocabulary}
    assert all(label.strip() for label in table.values())


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "0 s"), (0, "0 s"), (45.9, "45 s"), (60, "1 min"), (12 * 60 + 59, "12 min"), (3600, "1 h 00 min"),
    (3 * 3600 + 5 * 60, "3 h 05 min"), (86400, "1 j 0 h"), (2 * 86400 + 4 * 3600 + 59, "2 j 4 h"),
])
def test_durations_are_written_the_french_way(seconds: float, text: str) -> None:
    assert labels.duration_fr(seconds) == text


def test_the_conditions_labelled_are_those_a_referral_states() -> None:
    assert set(labels.CONDITION_FR) == {f.name for f in dataclasses.fields(Conditions)}
