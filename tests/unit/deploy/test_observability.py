"""Observability as code: the Prometheus rules and configs (promtool), the alert unit tests,
the Grafana dashboards, and the metric catalogue itself (Prometheus naming; no id of a patient
or a referral in a label).

promtool comes with deploy/local/install-prometheus.sh. Whether the dashboards' queries return data on a running platform is
tests/e2e/test_simulated_day.py."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
GRAFANA_DIR = REPO / "deploy" / "grafana"
DASHBOARDS_DIR = GRAFANA_DIR / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
needs_promtool = pytest.mark.skipif(not os.access(PROMTOOL, os.X_OK),
                                    reason="promtool is not installed (deploy/local/install-prometheus.sh)")
# Every module that defines Réflexe metrics: importing them registers the whole catalogue.
METRIC_MODULES = ["reflexe_common.metrics", "reflexe_common.audit", "reflexe_common.retention", "reflexe_notify.metrics", "reflexe_capacity.metrics",
                  "reflexe_referral.metrics", "reflexe_indicators.service_layer.facts",
                  "reflexe_indicators.entrypoints.app"]
# Labels that would identify a person or a file: forbidden on every metric.
FORBIDDEN_LABELS = re.compile(r"(^|_)(id|ids|referral|patient|nir|ins|name|email|offer|hold|subscription|delivery)($|_)")


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def rule_files() -> list[Path]:
    files = sorted(RULES_DIR.glob("*.yml")) + sorted(RULES_DIR.glob("*.yaml"))
    assert files, "no rule file in deploy/prometheus/rules"
    return files


def rules() -> list[dict[str, Any]]:
    return [rule for path in rule_files() for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for rule in group["rules"]]


def dashboards() -> dict[str, dict[str, Any]]:
    found = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(DASHBOARDS_DIR.glob("*.json"))}
    assert found, "no dashboard in deploy/grafana/dashboards"
    return found


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out += panel.get("panels", [])  # collapsed rows keep theirs inside
    return out


def exprs() -> list[str]:
    return [t["expr"] for d in dashboards().values() for p in panels(d) for t in p.get("targets", [])] + \
           [r["expr"] for r in rules()]


# --------------------------------------------------------------------------- promtool


@needs_promtool
@pytest.mark.parametrize("path", rule_files(), ids=lambda p: p.name)
def test_rule_file_passes_promtool_check(path: Path) -> None:
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_alert_unit_tests_pass() -> None:
    tests = sorted((PROMETHEUS_DIR / "tests").glob("*.yml"))
    assert tests, "deploy/prometheus/tests holds the promtool unit tests of the alerts"
    tested = {a["alertname"] for t in tests for case in yaml.safe_load(t.read_text(encoding="utf-8"))["tests"]
              for a in case.get("alert_rule_test", [])}
    assert len(tested & {r["alert"] for r in rules() if "alert" in r}) >= 2
    result = promtool("test", "rules", *[str(t) for t in tests], cwd=PROMETHEUS_DIR / "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def _local_copy(config: dict[str, Any], tmp_path: Path) -> Path:
    """The config with its rule_files (container paths) pointing at deploy/prometheus/rules."""
    config = dict(config)
    config["rule_files"] = [str(RULES_DIR / Path(f).name) for f in config.get("rule_files", [])]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@needs_promtool
def test_compose_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    assert all(f.startswith("/etc/prometheus/rules/") for f in config["rule_files"])
    result = promtool("check", "config", str(_local_copy(config, tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr
    # The rules really are loaded through the globs: each file is named in the check's output.
    for path in rule_files():
        assert path.name in result.stdout + result.stderr, f"{path.name} is not matched by rule_files"


def test_rules_follow_the_conventions() -> None:
    records = [r["record"] for r in rules() if "record" in r]
    alerts = [r for r in rules() if "alert" in r]
    assert len(records) == len(set(records)) and len(alerts) == len({a["alert"] for a in alerts})
    for record in records:
        assert re.fullmatch(r"[a-z_]+:reflexe_[a-z0-9_]+:[a-z0-9_]+", record), f"{record}: want level:metric:operations"
    for alert in alerts:
        assert alert["alert"].startswith("Reflexe"), alert["alert"]
        assert alert["labels"].get("severity") in {"warning", "critical"}, alert["alert"]
        assert alert["labels"].get("team") in {"desk", "ars", "platform"}, alert["alert"]
        assert alert.get("annotations", {}).get("summary"), f"{alert['alert']} has no summary"
    names = {a["alert"] for a in alerts}
    # What an operator on call must hear about: SLA breaches, consumer lag, stale declarations, dead letters, outbox backlog.
    assert {"ReflexeAdmittedWithin24hBelowTarget", "ReflexeOffersUnanswered", "ReflexeConsumerLagHigh",
            "ReflexeStaleCapacityDeclarations", "ReflexeDeadLettersGrowing", "ReflexeOutboxBacklog"} <= names


# --------------------------------------------------------------------------- dashboards


def test_dashboards_are_the_three_views_with_unique_uids() -> None:
    found = dashboards()
    uids = [d["uid"] for d in found.values()]
    assert len(uids) == len(set(uids)) and all(uids)
    assert {"reflexe-ars-overview", "reflexe-department-desk", "reflexe-platform-health"} <= set(uids)
    for name, dashboard in found.items():
        assert dashboard.get("title") and dashboard.get("panels"), name
        ids = [p["id"] for p in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_panel_queries_the_provisioned_prometheus(name: str) -> None:
    for panel in panels(dashboards()[name]):
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, f"{name} / {panel['title']}: datasource {panel.get('datasource')}"
        assert panel.get("targets"), f"{name} / {panel['title']}: no query"
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, f"{name} / {panel['title']}"
            assert target.get("expr", "").strip(), f"{name} / {panel['title']}: empty expr"
            assert target.get("refId"), f"{name} / {panel['title']}: no refId"
    for variable in dashboards()[name].get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            assert variable.get("datasource") == DATASOURCE, f"{name}: variable {variable['name']}"


def test_department_dashboards_have_the_department_variable() -> None:
    for uid in ("reflexe-ars-overview", "reflexe-department-desk"):
        dashboard = next(d for d in dashboards().values() if d["uid"] == uid)
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert "department" in variables, uid
        queries = [t["expr"] for p in panels(dashboard) for t in p.get("targets", [])]
        uses = [q for q in queries if "$department" in q]
        assert len(uses) >= len(queries) - 1, f"{uid}: panels ignoring $department: {set(queries) - set(uses)}"


def test_ars_overview_shows_the_viability_threshold() -> None:
    dashboard = next(d for d in dashboards().values() if d["uid"] == "reflexe-ars-overview")
    steps = [s.get("value") for p in panels(dashboard)
             for s in p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])]
    assert 50 in steps, "occupancy must be drawn against the 50-patients-a-day viability threshold"


def test_compose_mounts_the_dashboards_and_the_rules() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))["services"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in compose["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in compose["grafana"]["volumes"]
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in compose["prometheus"]["volumes"]


# --------------------------------------------------------------------------- the metric catalogue


@cache
def catalogue() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (type, label names) of every reflexe_* metric the services register."""
    for module in METRIC_MODULES:
        importlib.import_module(module)
    from prometheus_client import REGISTRY

    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the registry has no public listing
        describe = getattr(collector, "describe", None)
        for family in (describe() if describe else collector.collect()):
            if family.name.startswith("reflexe_"):
                labels = tuple(getattr(collector, "_labelnames", ()) or
                               (family.samples[0].labels.keys() if family.samples else ()))
                kind = family.type
                name = family.name + "_total" if kind == "counter" else family.name
                found[name] = (kind, labels)
    # SnapshotGauges declare their labels up front.
    from reflexe_common.metrics import SnapshotGauges

    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001
        if isinstance(collector, SnapshotGauges):
            for name, (_, labels) in collector._families.items():  # noqa: SLF001
                found[name] = ("gauge", labels)
    return found


def test_metric_names_follow_prometheus_conventions() -> None:
    metrics = catalogue()
    assert len(metrics) >= 30, sorted(metrics)
    for name, (kind, labels) in metrics.items():
        assert re.fullmatch(r"reflexe_[a-z0-9_]+", name), name
        if kind == "counter":
            assert name.endswith("_total"), f"counter {name} must end in _total"
        else:
            assert not name.endswith("_total"), f"{kind} {name} must not end in _total"
        if kind == "histogram":
            assert name.endswith("_seconds"), f"histogram {name}: durations in seconds"
        assert not re.search(r"_(minutes?|min|ms|milliseconds|hours?|days?|percent)$", name), f"{name}: base units"
        for label in labels:
            assert not FORBIDDEN_LABELS.search(label), f"{name}: label {label!r} could carry an id"


def test_dashboards_and_rules_only_use_metrics_that_exist() -> None:
    metrics = catalogue()
    known = set(metrics) | {f"{n}{s}" for n, (k, _) in metrics.items() if k == "histogram"
                            for s in ("_bucket", "_count", "_sum")}
    records = {r["record"] for r in rules() if "record" in r}
    for expr in exprs():
        for name in re.findall(r"(?<![:\w])reflexe_[a-z0-9_]+(?![:\w])", expr):
            assert name in known, f"{name} (in {expr!r}) is not a metric of any service"
        for name in re.findall(r"\b[a-z_]+:reflexe_[a-z0-9_]+:[a-z0-9_]+\b", expr):
            assert name in records, f"{name} (in {expr!r}) is not a recording rule"


def test_domain_metrics_of_the_issue_exist_with_their_labels() -> None:
    metrics = catalogue()
    expected = {
        "reflexe_consumer_lag_records": ("gauge", ("group", "topic")),
        "reflexe_request_to_admission_seconds": ("histogram", ("department",)),
        "reflexe_had_live_places": ("gauge", ("department", "had")),
        "reflexe_had_declared_places": ("gauge", ("department", "had")),
        "reflexe_had_authorised_places": ("gauge", ("department", "had")),
        "reflexe_had_occupancy_ratio": ("gauge", ("department", "had")),
        "reflexe_stale_declarations": ("gauge", ("department",)),
        "reflexe_referrals_total": ("counter", ("department", "source_kind")),
        "reflexe_offers_total": ("counter", ("department", "outcome")),
        "reflexe_offer_declines_total": ("counter", ("department", "reason")),
        "reflexe_admissions_total": ("counter", ("department",)),
        "reflexe_dead_letters_total": ("counter", ("consumer", "topic")),
        "reflexe_outbox_backlog_events": ("gauge", ("service",)),
        "reflexe_webhook_deliveries_total": ("counter", ("outcome",)),
        "reflexe_http_request_duration_seconds": ("histogram", ("service", "method", "route", "status")),
    }
    for name, (kind, labels) in expected.items():
        assert name in metrics, f"{name} is not exposed"
        assert metrics[name][0] == kind, f"{name}: {metrics[name][0]}, want {kind}"
        assert tuple(metrics[name][1]) == labels, f"{name}: labels {metrics[name][1]}, want {labels}"


# The Kubernetes monitoring resources (PodMonitors, the PrometheusRules generated from these rule
# files, the dashboards' ConfigMaps) are checked with the overlays: test_k8s_manifests.py.


def test_install_prometheus_script_is_idempotent_and_valid_bash() -> None:
    script = REPO / "deploy" / "local" / "install-prometheus.sh"
    assert os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert "/usr/bin/prometheus" in text and "apt_install --no-install-recommends prometheus" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if Path("/usr/bin/prometheus").exists() and Path("/usr/bin/promtool").exists():
        # Already installed: a second run changes nothing and succeeds.
        assert subprocess.run(["bash", str(script)], capture_output=True, timeout=30).returncode == 0


# --------------------------------------------------------------------------- metric helpers


def test_snapshot_gauges_serve_the_latest_snapshot_only() -> None:
    from prometheus_client import REGISTRY, generate_latest

    from reflexe_common.metrics import SnapshotGauges

    gauges = SnapshotGauges({"reflexe_test_snapshot_places": ("test", ("department", "had"))})
    try:
        gauges.replace({"reflexe_test_snapshot_places": [(("34", "340000017"), 3), (("31", "310000013"), 1)]})
        gauges.replace({"reflexe_test_snapshot_places": [(("34", "340000017"), 2)]})
        text = generate_latest().decode()
        assert 'reflexe_test_snapshot_places{department="34",had="340000017"} 2.0' in text
        assert "310000013" not in text, "a series missing from the latest snapshot must disappear"
        with pytest.raises(ValueError):
            gauges.replace({"reflexe_unknown": []})
    finally:
        REGISTRY.unregister(gauges)


def test_indicator_durations_are_exposed_in_seconds() -> None:
    from reflexe_indicators.entrypoints.app import _base_unit

    assert _base_unit("admission_median_min", 2.5) == ("admission_median_seconds", 150.0)
    assert _base_unit("occupancy", 0.5) == ("occupancy", 0.5)


def test_no_created_series_beside_counters() -> None:
    catalogue()
    from prometheus_client import generate_latest

    assert "_created" not in generate_latest().decode()
