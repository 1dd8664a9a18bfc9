"""Shared benchmark plumbing: its own throwaway infrastructure, percentiles, paced load, the RSS
and CPU of the processes a benchmark starts, and the one JSON line each benchmark ends with."""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from tests.support.infra import Infra, make_state_dir, start_infra, stop_infra

# Within each REFLEXE_TEST_PORT_OFFSET's block of 100 ports, beside the test session's (28092-28097,
# 28432 + offset: tests/conftest.py), so that a benchmark runs next to any test run, its own included.
PORT_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))
BENCH_KAFKA_PORT = 28142 + PORT_OFFSET
BENCH_CONTROLLER_PORT = 28143 + PORT_OFFSET
BENCH_PG_PORT = 28482 + PORT_OFFSET
# What each service may hold in memory under the benchmarks' loads (issue 11's target).
RSS_TARGET_MB = 150


def quick() -> bool:
    """`./reflexe bench --quick`: tiny volumes, to check that every benchmark runs and reports its
    figures (the test suite does), not to measure."""
    return os.environ.get("REFLEXE_BENCH_QUICK") == "1"


def sized(full: int, quick_size: int) -> int:
    """A volume: `full` in a measuring run, `quick_size` in a quick one."""
    return quick_size if quick() else full


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


def latency_figures(name: str, samples_seconds: list[float], p99_target_ms: float | None = None,
                    p50_target_ms: float | None = None) -> dict[str, dict[str, Any]]:
    """`name`_p50_ms, _p95_ms, _p99_ms (with their targets, if any) and _samples of a latency."""
    stats = percentiles(samples_seconds)
    return {
        f"{name}_p50_ms": figure(stats.get("p50_ms"), "ms", p50_target_ms, "<=" if p50_target_ms is not None else None),
        f"{name}_p95_ms": figure(stats.get("p95_ms"), "ms"),
        f"{name}_p99_ms": figure(stats.get("p99_ms"), "ms", p99_target_ms, "<=" if p99_target_ms is not None else None),
        f"{name}_samples": figure(stats["n"], "count"),
    }


def rss_kb(pid: int) -> int | None:
    """The resident set of a live process (VmRSS), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssWatch:
    """Samples the resident memory of the service processes a benchmark started, from a thread
    (the benchmark's event loop is busy with the load), and keeps each one's maximum."""

    def __init__(self, interval_seconds: float = 0.1) -> None:
        self._pids: dict[str, int] = {}
        self._max_kb: dict[str, int] = {}
        self._interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, name="rss-watch", daemon=True)

    def watch(self, service: str, pid: int) -> None:
        self._pids[service] = pid
        self._sample()
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def _sample(self) -> None:
        for service, pid in list(self._pids.items()):
            kb = rss_kb(pid)
            if kb is not None:
                self._max_kb[service] = max(kb, self._max_kb.get(service, 0))

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def figures(self) -> dict[str, dict[str, Any]]:
        """rss_<service>_mb: the maximum over the run, against the per-service target."""
        return {f"rss_{service}_mb": figure(self._max_kb[service] / 1024 if service in self._max_kb else None,
                                            "MB", RSS_TARGET_MB, "<=")
                for service in self._pids}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used: what an event costs it, a figure that a machine
    busy with other work distorts much less than latencies."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_cpu_seconds(command: str) -> float:
    """CPU of every process of this command name on the machine (a benchmark's own cluster
    dominates during its run)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == command:
                    total += cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def postgres_cpu_seconds() -> float:
    return command_cpu_seconds("postgres")


def machine_busy_seconds() -> float:
    """CPU time all cores together spent busy since boot (/proc/stat: all but idle and I/O wait)."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuAccount:
    """Where a load's CPU went: each service process, PostgreSQL, the Kafka broker (the JVM), this
    benchmark process (the load and the receivers) and the rest of the machine, between `start`
    and `stop`, per unit of work; and how busy the machine's cores were meanwhile."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._started: dict[str, float] = {}
        self._spent: dict[str, float] = {}
        self._elapsed = 0.0

    def _now(self) -> dict[str, float]:
        return {**{name: cpu_seconds(pid) for name, pid in self._pids.items()},
                "postgres": postgres_cpu_seconds(), "kafka": command_cpu_seconds("java"),
                "benchmark": time.process_time(),
                "machine": machine_busy_seconds(), "wall": time.perf_counter()}

    def start(self) -> None:
        self._started = self._now()

    def stop(self) -> None:
        ended = self._now()
        spent = {name: ended[name] - self._started[name] for name in ended}
        self._elapsed = spent.pop("wall")
        spent["other"] = spent["machine"] - sum(v for k, v in spent.items() if k != "machine")
        self._spent = spent

    def figures(self, units: int, unit: str) -> dict[str, dict[str, Any]]:
        """cpu_<part>_ms_per_<unit>, and machine_busy_share (1.0: every core busy all along)."""
        figures = {f"cpu_{part}_ms_per_{unit}": figure(seconds * 1000 / units, "ms")
                   for part, seconds in self._spent.items()}
        cores = os.cpu_count() or 1
        figures["machine_busy_share"] = figure(self._spent["machine"] / (self._elapsed * cores), "share")
        return figures


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


# Every result line printed in this process, in order: `./reflexe bench` sums them up.
PRINTED_RESULTS: list[dict[str, Any]] = []


def print_result(benchmark: str, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Prints the benchmark's figures as one JSON line, which must be the last line of its output
    (a run is compared with another by these lines), and returns it."""
    line = result_line(benchmark, figures)
    print(json.dumps(line, ensure_ascii=False), flush=True)
    PRINTED_RESULTS.append(line)
    return line
