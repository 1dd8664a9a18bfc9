"""The department → partition table of the department-keyed topics, and the producer partitioner
that applies it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiokafka.partitioner import DefaultPartitioner

from reflexe_common.geography import Geography, is_department_code
from reflexe_common.partition_table import DEPARTMENT_PARTITION, PARTITIONS
from reflexe_common.partitioning import DepartmentPartitioner, balanced_table
from reflexe_common.topics import CAPACITY_EVENTS, MATCHING_EVENTS, REFERRAL_EVENTS

ROOT = Path(__file__).resolve().parents[3]
POPULATIONS = {code: d.population for code, d in Geography.load().departments.items() if is_department_code(code)}


def _generator():
    spec = importlib.util.spec_from_file_location("gen_partition_table", ROOT / "scripts/gen_partition_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_department_has_a_partition_of_the_department_topics():
    assert set(DEPARTMENT_PARTITION) == set(POPULATIONS)
    assert len(POPULATIONS) == 101
    assert all(0 <= p < PARTITIONS for p in DEPARTMENT_PARTITION.values())
    assert {REFERRAL_EVENTS.partitions, MATCHING_EVENTS.partitions, CAPACITY_EVENTS.partitions} == {PARTITIONS}


def test_the_busiest_partition_carries_little_more_than_a_fair_share():
    loads = [0] * PARTITIONS
    for code, partition in DEPARTMENT_PARTITION.items():
        loads[partition] += POPULATIONS[code]
    total = sum(POPULATIONS.values())
    assert min(loads) > 0
    assert max(loads) <= 1.05 * total / PARTITIONS
    hashed = [0] * PARTITIONS
    for code, population in POPULATIONS.items():
        hashed[DefaultPartitioner()(code.encode(), list(range(PARTITIONS)), [])] += population
    assert max(loads) < max(hashed) / 2, "the table must earn its place over the default partitioner"


def test_the_committed_table_is_what_the_generator_writes():
    # A difference means the populations changed: moving a department is a migration (docs/scaling.md).
    committed = (ROOT / "libs/common/src/reflexe_common/partition_table.py").read_text(encoding="utf-8")
    assert committed == _generator().render(PARTITIONS)


def test_balanced_table_places_the_largest_first_on_the_emptiest_partition():
    assert balanced_table({"a": 10, "b": 6, "c": 5, "d": 1}, 2) == {"a": 0, "b": 1, "c": 1, "d": 0}


def test_the_partitioner_sends_a_department_to_its_table_partition_and_hashes_other_keys():
    partitioner = DepartmentPartitioner()
    everything = list(range(PARTITIONS))
    for code in ("59", "2A", "971", "48"):
        assert partitioner(code.encode(), everything, everything) == DEPARTMENT_PARTITION[code]
    assert partitioner(b"not-a-department", everything, everything) == \
        DefaultPartitioner()(b"not-a-department", everything, everything)
    # A topic of another partition count (the dead letters' one) is hashed as the clients do.
    assert partitioner(b"59", [0], [0]) == 0
    six = list(range(6))
    assert partitioner(b"59", six, six) == DefaultPartitioner()(b"59", six, six)
