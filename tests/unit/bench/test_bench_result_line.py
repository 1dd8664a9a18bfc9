"""The one JSON line each benchmark ends with: runs are compared over time by it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from benchmarks.common import RssWatch, figure, print_result, rss_kb


def test_a_figure_below_its_ceiling_is_met_and_one_above_is_not():
    assert figure(24.9, "ms", 25, "<=")["met"] is True
    assert figure(25.1, "ms", 25, "<=")["met"] is False


def test_a_figure_above_its_floor_is_met_and_one_below_is_not():
    assert figure(1200, "referrals/s", 1000, ">=")["met"] is True
    assert figure(999, "referrals/s", 1000, ">=")["met"] is False


def test_a_figure_without_a_target_has_no_verdict():
    assert figure(3.3, "ms") == {"value": 3.3, "unit": "ms", "target": None, "op": None, "met": None}


def test_an_unmeasured_figure_with_a_target_is_not_met():
    assert figure(None, "ms", 25, "<=")["met"] is False
    assert figure(float("nan"), "ms", 25, "<=") == {"value": None, "unit": "ms", "target": 25, "op": "<=",
                                                    "met": False}


@pytest.mark.parametrize("target, op", [(25, None), (None, "<="), (25, "<")])
def test_a_target_needs_a_known_comparison(target, op):
    with pytest.raises(ValueError):
        figure(1.0, "ms", target, op)


def test_the_result_is_printed_as_the_last_line_in_json(capsys):
    print("some table")
    returned = print_result("relay", {"commit_to_kafka_p50": figure(4.0, "ms", 5, "<="),
                                      "commit_to_kafka_p99": figure(9.0, "ms")})
    last = capsys.readouterr().out.splitlines()[-1]
    line = json.loads(last)
    assert line == returned
    assert line["benchmark"] == "relay"
    assert set(line) == {"benchmark", "at", "machine", "figures", "all_met"}
    assert line["machine"]["cores"] >= 1
    assert line["all_met"] is True


def test_all_met_is_false_when_one_target_is_missed_and_null_when_none_is_set(capsys):
    missed = print_result("x", {"a": figure(4.0, "ms", 5, "<="), "b": figure(10, "ms", 5, "<=")})
    untargeted = print_result("y", {"a": figure(4.0, "ms")})
    assert missed["all_met"] is False
    assert untargeted["all_met"] is None


def test_the_rss_of_a_watched_process_is_its_maximum_against_the_per_service_target():
    watch = RssWatch(interval_seconds=0.01)
    watch.watch("bench", os.getpid())
    watch.stop()
    rss = watch.figures()["rss_bench_mb"]
    assert rss["unit"] == "MB" and rss["target"] == 150 and rss["op"] == "<="
    now_mb = rss_kb(os.getpid()) / 1024
    assert 0.5 * now_mb <= rss["value"] <= 2 * now_mb  # this process's own resident set, in MB


def test_a_process_gone_before_its_first_sample_is_reported_unmeasured():
    gone = subprocess.Popen(["true"])
    gone.wait()
    watch = RssWatch()
    watch.watch("gone", gone.pid)
    watch.stop()
    assert watch.figures()["rss_gone_mb"]["value"] is None
    assert watch.figures()["rss_gone_mb"]["met"] is False
