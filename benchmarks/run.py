"""Réflexe benchmarks: each prints its figures, then one JSON line of them (value, unit, target,
whether it is met); the run ends with a summary JSON line of every figure. Run with
./reflexe bench [NAME ...] (default: all, in this order):

  relay    outbox commit → record on Kafka (read_committed), p50/p99
  slice    referral POST answered → HAD webhook received, p50/p99, vs raw aiokafka round trip; RSS
  notify   event published → webhook and → SSE received, p50/p99; webhook deliveries per second; RSS
  matcher  referral event → offer event latency at a steady rate, sustained and flat throughput; RSS
  replay   indicators rebuilt from the log for a simulated national year; one-month queries at
           every level afterwards

--quick runs tiny volumes: it checks that every benchmark runs and reports, it measures nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name → (module, steady rate per second: the targets' rate; replay: 50 = one national year)
BENCHES: dict[str, tuple[str, float]] = {
    "relay": ("benchmarks.relay", 100),
    "slice": ("benchmarks.slice", 100),
    "notify": ("benchmarks.notify", 100),
    "matcher": ("benchmarks.matcher", 100),
    "replay": ("benchmarks.replay", 50),
}
QUICK_RATE, QUICK_SECONDS, QUICK_REPLAY_RATE = 20.0, 2.0, 0.5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, among {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--rate", type=float, help="events per second of the steady-rate runs (default: 100, "
                                                   "the targets' rate)")
    parser.add_argument("--seconds", type=float, default=30, help="duration of each steady-rate run")
    parser.add_argument("--years", type=float, default=1, help="replay: simulated national years in the log")
    parser.add_argument("--quick", action="store_true", help="tiny volumes: every benchmark runs and reports")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    return args


def summary_figures(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every figure of every benchmark, named `benchmark.figure`."""
    return {f"{line['benchmark']}.{name}": value for line in results for name, value in line["figures"].items()}


def run_all(args: argparse.Namespace) -> int:
    if args.quick:
        os.environ["REFLEXE_BENCH_QUICK"] = "1"
        os.environ.setdefault("REFLEXE_BENCH_MATCHER_REFERRALS", "200")
    # Imported once the volumes are settled: some benchmarks size themselves when imported.
    from benchmarks.common import PRINTED_RESULTS, bench_infra, result_line
    from reflexe_common.topics import ensure_topics

    names = args.names or list(BENCHES)
    seconds = QUICK_SECONDS if args.quick else args.seconds
    log_dir = Path(tempfile.mkdtemp(prefix="reflexe-bench-logs-"))
    print(f"service logs: {log_dir}", flush=True)
    outcome: dict[str, str] = {}
    durations: dict[str, float] = {}
    infra_started = time.monotonic()
    with bench_infra() as infra:
        asyncio.run(ensure_topics(infra.kafka()))
        durations["infrastructure"] = round(time.monotonic() - infra_started, 1)
        for name in names:
            module_name, default_rate = BENCHES[name]
            if name == "replay":
                rate = QUICK_REPLAY_RATE if args.quick else default_rate * args.years
            else:
                rate = QUICK_RATE if args.quick else (args.rate or default_rate)
            printed_before = len(PRINTED_RESULTS)
            started = time.monotonic()
            print(f"\n== {name} ==", flush=True)  # where a benchmark's output starts: the line above ends the previous one
            try:
                module = importlib.import_module(module_name)
                asyncio.run(module.run(infra, rate, seconds, log_dir))
            except Exception:  # one benchmark failing does not hide the others' figures
                traceback.print_exc()
                sys.stdout.flush()
                outcome[name] = "failed"
                continue
            finally:
                durations[name] = round(time.monotonic() - started, 1)
            reported = [line for line in PRINTED_RESULTS[printed_before:] if line["benchmark"] == name]
            outcome[name] = "reported" if reported else "no result line"
    results = [line for line in PRINTED_RESULTS if line["benchmark"] in names]
    summary = result_line("summary", summary_figures(results))
    missing = sorted(name for name, state in outcome.items() if state != "reported")
    summary["benchmarks"] = outcome
    summary["seconds"] = durations  # wall times: the broker's and database's start, each benchmark's with its set-up
    if missing:  # their targets were not measured, hence not met
        summary["all_met"] = False
    print(json.dumps(summary, ensure_ascii=False), flush=True)
    return 1 if missing else 0


def main() -> None:
    # Stopped like Ctrl-C: the benchmark's service processes, broker and database are stopped too.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(run_all(parse_args()))


if __name__ == "__main__":
    main()
