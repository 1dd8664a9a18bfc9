"""Shared benchmark plumbing: its own throwaway infrastructure, percentiles, paced load."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterator

from tests.support.infra import Infra, make_state_dir, start_infra, stop_infra

BENCH_KAFKA_PORT = 27092
BENCH_CONTROLLER_PORT = 27093
BENCH_PG_PORT = 27432


@contextmanager
def bench_infra() -> Iterator[Infra]:
    state_dir = make_state_dir("reflexe-bench-")
    try:
        infra = start_infra(state_dir, BENCH_KAFKA_PORT, BENCH_CONTROLLER_PORT, BENCH_PG_PORT)
        # As `eval "$(infra.sh start)"` would: in-process services connect as their own principals.
        os.environ.update(infra.kafka_env())
        # A benchmark measures the platform, not its door: one hospital token sends the whole load.
        os.environ.setdefault("RATE_LIMIT_PER_SECOND", "1000000")
        os.environ.setdefault("RATE_LIMIT_BURST", "1000000")
        yield infra
    finally:
        stop_infra(state_dir)


def percentiles(samples_seconds: list[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds (nearest-rank on the sorted samples)."""
    if not samples_seconds:
        return {"n": 0}
    ordered = sorted(samples_seconds)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))] * 1000

    return {"n": len(ordered), "p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99),
            "max_ms": ordered[-1] * 1000, "mean_ms": statistics.fmean(ordered) * 1000}


async def paced(rate_per_second: float, count: int, action: Callable[[int], Awaitable[None]]) -> float:
    """Start `action(i)` at a steady rate (open loop: a slow call does not slow the schedule);
    returns the elapsed seconds once every action finished."""
    started = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = started + i / rate_per_second - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action(i)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - started


def print_table(title: str, rows: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    for name, stats in rows.items():
        figures = "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())
        print(f"  {name:<34} {figures}")



def figure(value: float | None, unit: str, target: float | None = None, op: str | None = None) -> dict[str, Any]:
    """One measured figure; `target` with `op` ("<=" or ">=") says what the platform must reach.
    A figure that could not be measured (no samples) has value None and, when it has a target, is not met."""
    if (target is None) != (op is None):
        raise ValueError("a target needs its comparison, and a comparison its target")
    if op not in (None, "<=", ">="):
        raise ValueError(f"op must be '<=' or '>=', not {op!r}")
    if isinstance(value, float) and not math.isfinite(value):
        value = None
    if isinstance(value, float):
        value = round(value, 3)
    met = None
    if target is not None:
        met = value is not None and (value <= target if op == "<=" else value >= target)
    return {"value": value, "unit": unit, "target": target, "op": op, "met": met}


def machine() -> dict[str, int | None]:
    """The machine the figures come from: they only compare between runs on alike machines."""
    mem_mb = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    mem_mb = int(line.split()[1]) // 1024
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "mem_mb": mem_mb}


def result_line(benchmark: str, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The comparable record of one benchmark run. `all_met` is whether every figure with a target
    met it (None when no figure has a target)."""
    targeted = [f["met"] for f in figures.values() if f["target"] is not None]
    return {"benchmark": benchmark, "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": machine(), "figures": figures, "all_met": all(targeted) if targeted else None}


def print_result(benchmark: str, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Prints the benchmark's figures as one JSON line, which must be the last line of its output
    (a run is compared with another by these lines), and returns it."""
    line = result_line(benchmark, figures)
    print(json.dumps(line, ensure_ascii=False), flush=True)
    return line
