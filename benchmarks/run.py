"""Réflexe benchmarks: each prints its figures. Run with ./reflexe bench [NAME ...] (default: all).

  slice    referral POST answered → HAD webhook received, p50/p95/p99, vs raw aiokafka round trip
  notify   event published → webhook and → SSE received, p50/p99; webhook deliveries per second
  matcher  referral event → offer event latency at a steady rate, and sustained offers per second
  replay   indicators rebuilt from the log for a simulated national year (--rate 50 = one year)
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import matcher as matcher_bench  # noqa: E402
from benchmarks import notify as notify_bench  # noqa: E402
from benchmarks import replay as replay_bench  # noqa: E402
from benchmarks import slice as slice_bench  # noqa: E402
from benchmarks.common import bench_infra  # noqa: E402
from reflexe_common.topics import ensure_topics  # noqa: E402

BENCHES = {"slice": slice_bench, "matcher": matcher_bench, "notify": notify_bench, "replay": replay_bench}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run, among {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--rate", type=float, default=50, help="referrals per second for latency runs")
    parser.add_argument("--seconds", type=float, default=30, help="duration of each steady-rate run")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    log_dir = Path(tempfile.mkdtemp(prefix="reflexe-bench-logs-"))
    print(f"service logs: {log_dir}")
    with bench_infra() as infra:
        asyncio.run(ensure_topics(infra.kafka()))
        for name in names:
            asyncio.run(BENCHES[name].run(infra, args.rate, args.seconds, log_dir))


if __name__ == "__main__":
    main()
