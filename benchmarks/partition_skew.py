"""How evenly the departments' load falls on the partitions of the department-keyed topics.

A department's referral, matching and capacity events are keyed by its code, so one partition
carries whole departments, and the process that owns a partition does all their work. Load is
taken as proportional to population (referrals follow population; the COG data carries it).

For each partition count, two mappings are compared:
- `hash`: the Kafka clients' default partitioner (murmur2 of the key, as aiokafka and the Java
  client do) — what a producer that only sets the key gets;
- `balanced`: a table placing the departments by population, largest first, each on the
  partition with the least load so far (longest-processing-time greedy).

The figures: the busiest partition's share of the national population, its ratio to a perfect
share (1/partitions), the number of departments on the fullest partition, and the lower bound set
by the most populous department (a department is never split). Prints a table, then one JSON line.

    python -m benchmarks.partition_skew [--partitions 6,12,24,48]
"""

from __future__ import annotations

import argparse
import json

from aiokafka.partitioner import murmur2

from reflexe_common.geography import Geography, is_department_code
from reflexe_common.partitioning import balanced_table


def hash_partition(department_code: str, partitions: int) -> int:
    return (murmur2(department_code.encode()) & 0x7FFFFFFF) % partitions


def skew(populations: dict[str, int], placement: dict[str, int], partitions: int) -> dict[str, float | int]:
    total = sum(populations.values())
    loads = [0] * partitions
    counts = [0] * partitions
    for code, population in populations.items():
        loads[placement[code]] += population
        counts[placement[code]] += 1
    busiest = max(range(partitions), key=lambda p: loads[p])
    return {
        "max_share_pct": round(100 * loads[busiest] / total, 2),
        "min_share_pct": round(100 * min(loads) / total, 2),
        "max_over_fair": round(loads[busiest] * partitions / total, 2),
        "departments_on_busiest": counts[busiest],
        "empty_partitions": sum(1 for load in loads if load == 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", default="6,12,16,24,32,48",
                        help="comma-separated partition counts to compare")
    args = parser.parse_args()
    # The 101 departments (the COG also lists overseas collectivities that have no HAD here).
    populations = {code: d.population for code, d in Geography.load().departments.items() if is_department_code(code)}
    total = sum(populations.values())
    largest = max(populations, key=populations.__getitem__)
    floor_pct = round(100 * populations[largest] / total, 2)
    print(f"{len(populations)} departments, {total:,} inhabitants; the most populous ({largest}) "
          f"is {floor_pct} % of the country: no mapping goes below that share on one partition")
    print(f"{'partitions':>10} {'mapping':>9} {'max %':>7} {'min %':>7} {'max/fair':>9} {'depts':>6} {'empty':>6}")
    results = []
    for partitions in (int(p) for p in args.partitions.split(",")):
        for mapping, placement in (
            ("hash", {code: hash_partition(code, partitions) for code in populations}),
            ("balanced", balanced_table(populations, partitions)),
        ):
            figures = skew(populations, placement, partitions)
            results.append({"partitions": partitions, "mapping": mapping, **figures})
            print(f"{partitions:>10} {mapping:>9} {figures['max_share_pct']:>7} {figures['min_share_pct']:>7} "
                  f"{figures['max_over_fair']:>9} {figures['departments_on_busiest']:>6} {figures['empty_partitions']:>6}")
    print(json.dumps({"benchmark": "partition_skew", "largest_department_pct": floor_pct, "results": results}))


if __name__ == "__main__":
    main()
