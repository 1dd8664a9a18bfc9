"""The Grafana dashboards work: the platform runs a simulated day (the four services as
processes, the simulator as a process), a real Prometheus scrapes them every second with the
rules of deploy/prometheus/rules/ loaded, and EVERY panel query of deploy/grafana/dashboards/
(template variables set to real values) and every recording rule must be valid PromQL and
return data. Grafana itself is not needed: it sends these very queries to Prometheus.

Needs /usr/bin/prometheus (deploy/local/install-prometheus.sh)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.platform import running_platform
from tests.support.services import JWT_SECRET, REPO_ROOT, free_port

pytestmark = pytest.mark.e2e
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules"
SPEED = 600  # simulated seconds per real second: a simulated hour every 6 s
SIMULATION_SECONDS = 150  # upper bound: the test stops as soon as every query has data
# Values the dashboards' variables take in the test, and Grafana's built-in intervals.
# Lozère (48) and Lot (46): departments no other test uses, so the simulator's HADs, which
# cover every commune of theirs, compete with no other test's HADs in the shared database.
VARIABLES = {"department": "48", "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# The platform's clocks scaled like `./reflexe up` does, so offers expire, reminders fire and
# declarations go stale within the run.
PLATFORM_ENV = {
    "CAPACITY_HOLD_MINUTES_WITHIN_24H": str(30 / SPEED),
    "CAPACITY_HOLD_MINUTES_PLANNED": str(240 / SPEED),
    "CAPACITY_STALE_AFTER_MINUTES": str(720 / SPEED),
    "INDICATORS_STALE_AFTER_MINUTES": "1",
    "REFERRAL_OFFER_UNANSWERED_MINUTES": str(15 / SPEED),
    "INDICATORS_METRICS_REFRESH_SECONDS": "2",
}


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in VARIABLES, f"unknown dashboard variable ${name} in {expr!r}"
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, expression) of every panel target, rows' nested panels included."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        panels = list(dashboard["panels"])
        for row in dashboard["panels"]:
            panels += row.get("panels", [])
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((path.stem, panel["title"], substitute(target["expr"])))
    return out


def recording_rules() -> list[str]:
    return [rule["record"] for path in sorted(RULES.glob("*.y*ml"))
            for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
            for rule in group["rules"] if "record" in rule]


def prometheus_config(services: dict, rules_dir: Path) -> dict:
    """deploy/prometheus/prometheus.yml with the test's targets, rules and 1 s intervals."""
    config = yaml.safe_load((REPO_ROOT / "deploy/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(rules_dir / "*.yml")]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "reflexe")
    job["static_configs"] = [{"targets": [f"127.0.0.1:{p.port}"], "labels": {"service": name}}
                             for name, p in services.items()]
    config["scrape_configs"] = [job]
    return config


def fast_rules(rules_dir: Path) -> None:
    """The rule files with every group evaluated each second (their expressions unchanged)."""
    rules_dir.mkdir()
    for path in RULES.glob("*.yml"):
        rules = yaml.safe_load(path.read_text(encoding="utf-8"))
        for group in rules["groups"]:
            group["interval"] = "1s"
        (rules_dir / path.name).write_text(yaml.safe_dump(rules), encoding="utf-8")


async def missing_data(prom: httpx.AsyncClient, queries: list[tuple[str, str, str]]) -> list[str]:
    """The queries that fail or return nothing (with why); [] when every one has data."""
    problems = []
    for dashboard, title, expr in queries:
        answer = await prom.get("/api/v1/query", params={"query": expr})
        body = answer.json()
        if body.get("status") != "success":
            problems.append(f"{dashboard} / {title}: INVALID {expr!r}: {body.get('error')}")
        elif not body["data"]["result"]:
            problems.append(f"{dashboard} / {title}: NO DATA {expr!r}")
    return problems


@pytest.mark.skipif(not Path(PROMETHEUS).exists(), reason="prometheus is not installed (deploy/local/install-prometheus.sh)")
async def test_every_dashboard_query_and_recording_rule_returns_data(topics, tmp_path):
    queries = panel_queries()
    assert len({d for d, _, _ in queries}) >= 3 and len(queries) > 40, "the dashboards are missing"
    queries += [("recording rules", record, record) for record in recording_rules()]

    async with running_platform(topics, tmp_path, **PLATFORM_ENV) as services:
        fast_rules(tmp_path / "rules")
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(services, tmp_path / "rules")), encoding="utf-8")
        check = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "config", str(config)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        prom_port, hook_port = free_port(), free_port()
        prom_log = open(tmp_path / "prometheus.log", "wb")
        sim_log = open(tmp_path / "simulator.log", "wb")
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
            stdout=prom_log, stderr=subprocess.STDOUT)
        simulator = subprocess.Popen(
            [sys.executable, "-m", "reflexe_simulator", "--departments", "48,46", "--speed", str(SPEED),
             "--start", "09:00", "--duration", str(SIMULATION_SECONDS), "--rate", "200",
             "--referral-url", services["referral"].url, "--capacity-url", services["capacity"].url,
             "--notify-url", services["notify"].url, "--jwt-secret", JWT_SECRET,
             "--webhook-port", str(hook_port), "--report-every", "30"],
            stdout=sim_log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{prom_port}", timeout=10) as prom:
                deadline = time.monotonic() + SIMULATION_SECONDS + 20
                problems = ["not asked yet"]
                while problems and time.monotonic() < deadline:
                    await asyncio.sleep(5)
                    assert prometheus.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                    try:
                        problems = await missing_data(prom, queries)
                    except httpx.HTTPError as exc:
                        problems = [f"prometheus not answering: {exc!r}"]
                    invalid = [p for p in problems if "INVALID" in p]
                    assert not invalid, "invalid queries:\n" + "\n".join(invalid)
                targets = (await prom.get("/api/v1/targets")).json()["data"]["activeTargets"]
                assert {t["labels"]["service"] for t in targets if t["health"] == "up"} == set(services)
                assert not problems, (f"{len(problems)} of {len(queries)} queries without data after the simulated day "
                                      f"(simulator log: {tmp_path / 'simulator.log'}):\n" + "\n".join(problems))
        finally:
            for process in (simulator, prometheus):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(20)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait(10)
            prom_log.close()
            sim_log.close()
