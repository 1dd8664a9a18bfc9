"""`./reflexe bench --quick`: every benchmark runs on its own real Kafka and PostgreSQL (beside the
test session's, REFLEXE_TEST_PORT_OFFSET's block) with tiny volumes and ends with its JSON line,
holding every figure the platform's targets name, with that target; the run ends with the
summary line of them all. It checks the shape of the report, not the speed: the figures of a
quick run on a shared machine mean nothing, and speed is not a timed test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_SECONDS = 900  # about three minutes on an idle machine; far more when it is shared
STOP_TIMEOUT_SECONDS = 180  # an interrupted run stops its services, broker and database
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(RUN_TIMEOUT_SECONDS + STOP_TIMEOUT_SECONDS + 60)]

RSS = (150, "<=")
# benchmark → figure → (target, comparison) the platform must reach, or None for a figure that
# gives context (the rate of the run, the broker's own round trip, the sample count)
EXPECTED: dict[str, dict[str, tuple[float, str] | None]] = {
    "relay": {"rate_per_s": None, "commit_to_record_p50_ms": (5, "<="), "commit_to_record_p99_ms": None,
              "commit_to_record_samples": None},
    "slice": {"rate_per_s": None, "post_to_webhook_p50_ms": None, "post_to_webhook_p99_ms": (100, "<="),
              "raw_round_trip_p50_ms": None, "raw_round_trip_p99_ms": None, "ratio_to_raw_p50": None,
              "ratio_to_raw_p99": None, "post_to_webhook_samples": None, "rss_referral_mb": RSS,
              "rss_capacity_mb": RSS, "rss_indicators_mb": RSS, "rss_notify_mb": RSS,
              **{f"cpu_{part}_ms_per_referral": None for part in (
                  "referral", "capacity", "indicators", "notify", "postgres", "kafka", "benchmark", "other", "machine")},
              "machine_busy_share": None},
    "notify": {"rate_per_s": None, "event_to_webhook_p99_ms": (50, "<="), "event_to_sse_p99_ms": (30, "<="),
               "webhook_deliveries_per_s": (2000, ">="), "event_to_webhook_samples": None,
               "event_to_sse_samples": None, "rss_notify_mb": RSS},
    "matcher": {"rate_per_s": None, "event_to_offer_p99_ms": (25, "<="), "sustained_per_s": (1000, ">="),
                "flat_ratio": (0.8, ">="), "event_to_offer_samples": None, "rss_capacity_mb": RSS},
    "replay": {"events": None, "replay_seconds": None, "replay_seconds_per_year": (10, "<="),
               "query_national_by_department_ms": (200, "<="), "query_national_by_region_ms": (200, "<="),
               "query_national_by_source_ms": (200, "<="), "query_national_by_had_ms": (200, "<="),
               "query_region_ms": (200, "<="), "query_department_ms": (200, "<="), "rss_indicators_mb": RSS},
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_figure(where: str, figure: dict, required: bool, expected: tuple[float, str] | None) -> None:
    """A figure of the targets' list must be measured; another one may be null (nothing to measure)."""
    assert set(figure) == {"value", "unit", "target", "op", "met"}, where
    assert _is_number(figure["value"]) or (not required and figure["value"] is None), \
        f"{where} was not measured: {figure}"
    assert isinstance(figure["unit"], str) and figure["unit"], where
    if figure["target"] is None:
        assert expected is None and figure["op"] is None and figure["met"] is None, f"{where}: {figure}"
        return
    assert figure["op"] in ("<=", ">="), where
    if expected is None:  # a target beyond the list's: consistent with its value
        expected = (figure["target"], figure["op"])
    target, op = expected
    assert (figure["target"], figure["op"]) == (target, op), f"{where}: target {figure['target']} {figure['op']}"
    value = figure["value"]
    reached = value is not None and (value <= target if op == "<=" else value >= target)
    assert figure["met"] is reached, f"{where}: met says {figure['met']} for {figure['value']} {op} {target}"


def test_every_benchmark_reports_every_figure_of_the_targets_as_json() -> None:
    # The benchmarks find their sources as ./reflexe does; the caller's path (a worktree's) first.
    run = subprocess.Popen([str(REPO_ROOT / "reflexe"), "bench", "--quick"], cwd=REPO_ROOT, env=dict(os.environ),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = run.communicate(timeout=RUN_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGINT)  # as Ctrl-C: it stops what it started
        stdout, stderr = run.communicate(timeout=STOP_TIMEOUT_SECONDS)
        pytest.fail(f"./reflexe bench --quick still running after {RUN_TIMEOUT_SECONDS} s:\n{stdout[-3000:]}")
    output = stdout.splitlines()
    assert run.returncode == 0, "\n".join(output[-40:]) + stderr[-3000:]
    lines = [json.loads(line) for line in output if line.startswith('{"benchmark": ')]
    reported = [line["benchmark"] for line in lines]
    assert reported == [*EXPECTED, "summary"], reported
    assert json.loads(output[-1])["benchmark"] == "summary", "the summary is the last line"
    # Each benchmark's JSON line is the last of its output: the line before the next one's start.
    starts = [i for i, line in enumerate(output) if line.startswith("== ") and line.endswith(" ==")]
    assert [output[i][3:-3] for i in starts] == list(EXPECTED)
    ends = [i - 2 for i in starts[1:]] + [len(output) - 2]  # a blank line precedes each start
    assert [json.loads(output[i])["benchmark"] for i in ends] == list(EXPECTED)

    for line in lines:
        assert {"benchmark", "at", "machine", "figures", "all_met"} <= set(line), line
        assert line["machine"]["cores"] >= 1 and line["machine"]["mem_mb"] > 0
    for line in lines[:-1]:
        expected = EXPECTED[line["benchmark"]]
        missing = set(expected) - set(line["figures"])
        assert not missing, f"{line['benchmark']} lacks {sorted(missing)}"
        for name, figure in line["figures"].items():
            _check_figure(f"{line['benchmark']}.{name}", figure, name in expected, expected.get(name))
        verdicts = [f["met"] for f in line["figures"].values() if f["target"] is not None]
        assert line["all_met"] is all(verdicts)

    summary = lines[-1]
    assert summary["benchmarks"] == {name: "reported" for name in EXPECTED}
    assert summary["figures"] == {f"{line['benchmark']}.{name}": figure
                                  for line in lines[:-1] for name, figure in line["figures"].items()}
    assert summary["all_met"] is all(line["all_met"] for line in lines[:-1])
