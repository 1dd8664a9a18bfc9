"""Which partition of the department-keyed topics carries each department.

A department's referral, matching and capacity events are keyed by its code, and one process owns
a partition: the busiest partition bounds how far the platform scales out. The Kafka clients'
default partitioner (murmur2 of the key) puts 9 departments and 11 % of the population on the
busiest of 24 partitions and leaves one empty; a table placing departments by population puts at
most 4.3 % there, near the floor of 3.8 % that the most populous department (Nord) sets on its
own (`python -m benchmarks.partition_skew` prints the comparison).

The table is generated once (`scripts/gen_partition_table.py`) and committed: a department that
moved partition would have its events in two partitions, out of order, so regenerating it is a
migration (docs/scaling.md), not a data refresh.
"""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from reflexe_common.partition_table import DEPARTMENT_PARTITION, PARTITIONS


def balanced_table(populations: dict[str, int], partitions: int) -> dict[str, int]:
    """Departments by population, largest first, each on the least loaded partition so far
    (longest-processing-time first; ties go to the lowest partition, so the result is stable)."""
    loads = [0] * partitions
    table: dict[str, int] = {}
    for code, population in sorted(populations.items(), key=lambda item: (-item[1], item[0])):
        target = min(range(partitions), key=lambda p: (loads[p], p))
        table[code] = target
        loads[target] += population
    return table


def department_partition(department_code: str) -> int | None:
    return DEPARTMENT_PARTITION.get(department_code)


class DepartmentPartitioner:
    """A producer partitioner: a department key goes to its partition in the table when the topic
    has the table's partition count; any other key (or topic) is hashed as the clients do."""

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is not None and len(all_partitions) == PARTITIONS:
            partition = DEPARTMENT_PARTITION.get(key.decode("utf-8", "replace"))
            if partition is not None:
                return all_partitions[partition]
        return DefaultPartitioner()(key, all_partitions, available)
