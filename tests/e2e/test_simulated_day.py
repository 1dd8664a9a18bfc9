"""A simulated day on the whole platform, checked three ways.

The four services and the HL7 gateway run as processes trusting the real Keycloak, from which the
simulator (also a process) gets every actor's token; a real Prometheus scrapes them every second
with the rules of deploy/prometheus/rules/ loaded. The simulator's establishments use every door:
REST, FHIR (ServiceRequests, Task answers) and HL7 over MLLP (hospitals' ED exits and
hospitalisations, HADs' admissions), the gateway allowing exactly its ADT senders.

- The Grafana dashboards work: EVERY panel query of deploy/grafana/dashboards/ (template
  variables set to real values) and every recording rule must be valid PromQL and return data.
  Grafana itself is not needed: it sends these very queries to Prometheus.
- Every door was used and worked: the gateway recorded the simulated hospitals' and HADs' ADT
  (all acknowledged AA), found the referrals from the hospitals' pseudonyms (ED exits recorded)
  and the HADs' (admissions), and the referral service answered FHIR ServiceRequests and Task
  updates.
- Every later path of a referral ran, as the simulator counts it and as the referral service's
  event log records it: an acceptance pending evaluation confirmed; one withdrawn, the search then
  going on (an offer to another HAD, or the desk alerted when none can take the patient); a liaison
  nurse's avis after posting; a referral posted without its consents, updated, then searched for
  the same way (and none offered while still incomplete).
- Privacy: the simulated hospitals write down the identities of their patients (names, NIR, birth
  dates, their own patient numbers) that they never send to the REST or FHIR APIs, and that their
  HL7 messages do carry in PID; a scan of every Kafka record, log line, metric and table row of
  the platform (the gateway's included) finds none of them, nor anything shaped like a NIR or a
  birth date.

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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import yaml

from reflexe_simulator.actors import Counters
from tests.support.keycloak import Keycloak
from tests.support.platform import running_platform
from tests.support.privacy_scan import Findings, PrivacyScan
from tests.support.services import REPO_ROOT, eventually, free_port
from tests.support.territory import own_named_department

# The first test also waits for Kafka, PostgreSQL and Keycloak to start (minutes on shared cores).
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
DASHBOARDS = REPO_ROOT / "deploy" / "grafana" / "dashboards"
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules"
SPEED = 600  # simulated seconds per real second: a simulated hour every 6 s
SIMULATION_SECONDS = 150  # upper bound: the test stops as soon as every query has data
# Lozère (48) and Lot (46), two small departments (a short simulated day), owned by this module: the
# simulator's HADs, which cover every commune of theirs, compete with no other test's HADs in the
# shared database, and no other test reads what the simulator writes there.
SIMULATED_DEPARTMENTS = [own_named_department("48"), own_named_department("46")]
# Values the dashboards' variables take in the test, and Grafana's built-in intervals.
VARIABLES = {"department": "48", "__rate_interval": "1m", "__interval": "15s", "__range": "1h"}
# The platform's clocks scaled like `./reflexe up` does, so offers expire, reminders fire and
# declarations go stale within the run.
PLATFORM_ENV = {
    # Holds of 2 simulated hours (12 real seconds) while the simulated HADs still answer within
    # 30 simulated minutes: on 2 shared cores the referral service may record an offer seconds
    # after its webhook reached the HAD, and an answer retried until then must still find it held.
    "CAPACITY_HOLD_MINUTES_WITHIN_24H": str(120 / SPEED),
    "CAPACITY_HOLD_MINUTES_PLANNED": str(240 / SPEED),
    "CAPACITY_STALE_AFTER_MINUTES": str(720 / SPEED),
    "INDICATORS_STALE_AFTER_MINUTES": "1",
    "REFERRAL_OFFER_UNANSWERED_MINUTES": str(15 / SPEED),
    "INDICATORS_METRICS_REFRESH_SECONDS": "2",
}


# The HL7 gateway's pseudonym key, which the simulated hospitals sending ADT share (test only).
PSEUDONYM_KEY = "simulated day: the gateway's pseudonym key"
GATEWAY_CLIENT_SECRET = "local-reflexe-gateway"  # the demo realm's gateway client (deploy/local/keycloak)
# Every simulated HAD reports its admissions by HL7 and half answer through FHIR: on shared cores
# few answers beat their hold, and the check below needs one HL7 admission (the REST ones are
# the other end-to-end tests'); the hospitals keep the default shares of each door.
SIMULATOR = [sys.executable, "-m", "reflexe_simulator", "--departments", ",".join(SIMULATED_DEPARTMENTS), "--hl7-hads", "1", "--fhir-hads", "0.5"]


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


@dataclass
class SimulatedDay:
    services: dict
    prometheus_url: str
    identities: Path
    log_dir: Path
    senders: dict  # the gateway's allow-list: the simulated establishments that send ADT
    started: float  # epoch seconds: what the gateway recorded before is another run's


def simulated_senders() -> dict:
    """The allow-list the simulator prints for its ADT senders, as ./reflexe up gives the gateway."""
    listed = subprocess.run([*SIMULATOR, "--print-gateway-senders"], capture_output=True, text=True, cwd=REPO_ROOT,
                            env={**os.environ, "GATEWAY_PSEUDONYM_KEY": PSEUDONYM_KEY}, check=True, timeout=120)
    senders = json.loads(listed.stdout)
    kinds = {s["kind"] for s in senders.values()}
    assert kinds == {"hospital", "had"}, f"the simulator must send ADT as hospitals and as HADs: {senders}"
    return senders


@pytest.fixture(scope="module")
async def day(topics, keycloak: Keycloak, tmp_path_factory) -> AsyncIterator[SimulatedDay]:
    assert Path(PROMETHEUS).exists(), "prometheus is not installed (deploy/local/install-prometheus.sh)"
    tmp_path = tmp_path_factory.mktemp("simulated-day")
    started = time.time()
    senders, mllp_port = simulated_senders(), free_port()
    gateway_env = {"GATEWAY_PSEUDONYM_KEY": PSEUDONYM_KEY, "GATEWAY_MLLP_PORT": str(mllp_port),
                   "GATEWAY_SENDERS": json.dumps(senders), "GATEWAY_CLIENT_SECRET": GATEWAY_CLIENT_SECRET}
    async with running_platform(topics, tmp_path, gateway_env, OIDC_ISSUER=keycloak.issuer, **PLATFORM_ENV) as services:
        fast_rules(tmp_path / "rules")
        config = tmp_path / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(services, tmp_path / "rules")), encoding="utf-8")
        check = subprocess.run([shutil.which("promtool") or "/usr/bin/promtool", "check", "config", str(config)],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        prom_port, hook_port = free_port(), free_port()
        identities = tmp_path / "identities.jsonl"
        prom_log = open(tmp_path / "prometheus.log", "wb")
        sim_log = open(tmp_path / "simulator.log", "wb")
        prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
            stdout=prom_log, stderr=subprocess.STDOUT)
        simulator = subprocess.Popen(
            [*SIMULATOR, "--speed", str(SPEED),
             "--start", "09:00", "--duration", str(SIMULATION_SECONDS), "--rate", "200",
             "--referral-url", services["referral"].url, "--capacity-url", services["capacity"].url,
             "--notify-url", services["notify"].url, "--oidc-issuer", keycloak.issuer,
             "--fhir-url", f"{services['referral'].url}/fhir", "--mllp-host", "127.0.0.1", "--mllp-port", str(mllp_port),
             "--identities-out", str(identities), "--webhook-port", str(hook_port), "--report-every", "10"],
            stdout=sim_log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
            # The key in the environment, not on a command line that any local user can read.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "KEYCLOAK_ADMIN_USER": keycloak.admin_user,
                 "KEYCLOAK_ADMIN_PASSWORD": keycloak.admin_password, "GATEWAY_PSEUDONYM_KEY": PSEUDONYM_KEY})
        try:
            yield SimulatedDay(services, f"http://127.0.0.1:{prom_port}", identities, tmp_path, senders, started)
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


async def test_every_dashboard_query_and_recording_rule_returns_data(day: SimulatedDay) -> None:
    queries = panel_queries()
    assert len({d for d, _, _ in queries}) >= 3 and len(queries) > 40, "the dashboards are missing"
    queries += [("recording rules", record, record) for record in recording_rules()]
    async with httpx.AsyncClient(base_url=day.prometheus_url, timeout=10) as prom:
        deadline = time.monotonic() + SIMULATION_SECONDS + 20
        problems = ["not asked yet"]
        while problems and time.monotonic() < deadline:
            await asyncio.sleep(5)
            try:
                problems = await missing_data(prom, queries)
            except httpx.HTTPError as exc:
                problems = [f"prometheus not answering: {exc!r}"]
            invalid = [p for p in problems if "INVALID" in p]
            assert not invalid, "invalid queries:\n" + "\n".join(invalid)
        targets = (await prom.get("/api/v1/targets")).json()["data"]["activeTargets"]
        assert {t["labels"]["service"] for t in targets if t["health"] == "up"} == set(day.services)
        assert not problems, (f"{len(problems)} of {len(queries)} queries without data after the simulated day "
                              f"(simulator log: {day.log_dir / 'simulator.log'}):\n" + "\n".join(problems))


async def test_every_door_was_used_and_worked(day: SimulatedDay, topics) -> None:
    """Runs before the privacy scan, so that the scan covers what went through each door."""
    hospitals = [f for f, s in day.senders.items() if s["kind"] == "hospital"]
    hads = [f for f, s in day.senders.items() if s["kind"] == "had"]
    seen: dict = {}

    async def every_door() -> bool:
        conn = await asyncpg.connect(topics.database_url)
        try:
            rows = await conn.fetch(
                "SELECT sender_finess = ANY($1::text[]) AS from_hospital, effect, status, count(*) AS n "
                "FROM gateway.messages WHERE sender_finess = ANY($2::text[]) AND received_at >= to_timestamp($3) "
                "GROUP BY 1, 2, 3", hospitals, hospitals + hads, day.started)
        finally:
            await conn.close()
        seen["gateway"] = {(r["from_hospital"], r["effect"], r["status"]): r["n"] for r in rows}
        async with httpx.AsyncClient(timeout=10) as http:
            referral = (await http.get(f"{day.services['referral'].url}/metrics")).text
            gateway = (await http.get(f"{day.services['gateway'].url}/metrics")).text
        seen["fhir"] = {
            "ServiceRequest created": _sample(referral, "reflexe_http_request_duration_seconds_count",
                                              method="POST", route="/fhir/ServiceRequest", status="2xx"),
            # An HAD's answer through its Task, taken (2xx) or refused as its hold had passed (4xx):
            # on shared cores most answers come after their few-second hold, whatever the door.
            "Task answers": sum(_sample(referral, "reflexe_http_request_duration_seconds_count", method="PUT",
                                        route="/fhir/Task/{referral_id}", status=status) for status in ("2xx", "4xx")),
        }
        seen["fhir 5xx"] = sum(float(line.rpartition(" ")[2]) for line in referral.splitlines()
                               if line.startswith("reflexe_http_request_duration_seconds_count{")
                               and 'route="/fhir' in line and 'status="5xx"' in line)
        seen["acks"] = {code: _sample(gateway, "reflexe_gateway_acks_total", code=code) for code in ("AA", "AE", "AR")}
        by_door = seen["gateway"]
        return (by_door.get((True, "ED_EXIT", "APPLIED"), 0) > 0  # the hospital's pseudonym found its referral
                and by_door.get((False, "HAD_ADMITTED", "APPLIED"), 0) > 0
                and all(n > 0 for n in seen["fhir"].values()) and seen["acks"]["AA"] > 0)

    try:
        await eventually(every_door, timeout=SIMULATION_SECONDS + 30, interval=2, what="every door used")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: seen {seen} (simulator log: {day.log_dir / 'simulator.log'})") from None
    assert seen["acks"]["AE"] == 0 and seen["acks"]["AR"] == 0, f"ADT the gateway did not take: {seen}"
    assert seen["fhir 5xx"] == 0, f"the FHIR API failed: {seen}"
    print(f"\ndoors used: {seen}")


def simulator_counters(log: Path) -> dict[str, int]:
    """The simulator's latest counters line ("counters name=value ..."), or {} before the first."""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if " counters " in line]
    if not lines:
        return {}
    pairs = (token.partition("=") for token in lines[-1].partition(" counters ")[2].split())
    return {name: int(value) for name, _, value in pairs if value.isdigit()}


# Per path, the referrals of the simulated departments whose event log shows it (events of this run).
PATHS_IN_EVENT_LOG = """
WITH ev AS (
    SELECT e.referral_id, e.seq, split_part(e.type, '.', 3) AS kind
    FROM referral.referral_events e JOIN referral.referrals r USING (referral_id)
    WHERE r.department = ANY($1::text[]) AND e.occurred_at >= to_timestamp($2)),
followed AS (  -- a step, then the search going on later in the referral's log: an offer, or the
               -- desk alerted when no HAD can take the patient
    SELECT DISTINCT step.kind, step.referral_id FROM ev step
    JOIN ev next ON next.referral_id = step.referral_id AND next.seq > step.seq
     AND next.kind IN ('OfferMade', 'ReferralEscalated')
    WHERE step.kind IN ('AcceptanceWithdrawn', 'ReferralCompleted'))
SELECT
    (SELECT count(DISTINCT referral_id) FROM ev WHERE kind = 'EvaluationConfirmed') AS confirmed,
    (SELECT count(*) FROM followed WHERE kind = 'AcceptanceWithdrawn') AS withdrawn_then_searched,
    (SELECT count(DISTINCT referral_id) FROM ev WHERE kind = 'AvisGiven') AS avis_after_posting,
    (SELECT count(*) FROM followed WHERE kind = 'ReferralCompleted') AS completed_then_searched
"""


async def test_every_later_path_of_a_referral_ran(day: SimulatedDay, topics) -> None:
    seen: dict = {}

    async def every_path() -> bool:
        seen["simulator"] = counters = simulator_counters(day.log_dir / "simulator.log")
        conn = await asyncpg.connect(topics.database_url)
        try:
            row = await conn.fetchrow(PATHS_IN_EVENT_LOG, SIMULATED_DEPARTMENTS, day.started)
        finally:
            await conn.close()
        seen["event log"] = dict(row)
        return all(counters.get(path, 0) > 0 for path in Counters.PATHS) and all(n > 0 for n in row.values())

    try:
        await eventually(every_path, timeout=SIMULATION_SECONDS + 30, interval=2, what="every later path of a referral")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: seen {seen} (simulator log: {day.log_dir / 'simulator.log'})") from None
    assert seen["simulator"]["offered_while_incomplete"] == 0, f"a referral was offered before its consents: {seen}"
    print(f"\nlater paths: {seen}")


def _sample(exposition: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include these (0 when there is none)."""
    total = 0.0
    for line in exposition.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


async def test_no_patient_identity_reaches_kafka_logs_metrics_or_tables(day: SimulatedDay, topics) -> None:
    def enough_patients() -> bool:
        return day.identities.exists() and len(day.identities.read_text(encoding="utf-8").splitlines()) >= 30

    await eventually(lambda: asyncio.sleep(0, enough_patients()), timeout=SIMULATION_SECONDS, interval=1,
                     what="30 simulated patients")
    async with httpx.AsyncClient(timeout=10) as http:
        await eventually(lambda: _webhooks_delivered(http, day), timeout=60, interval=1, what="a delivered webhook")
        scan = PrivacyScan.of_identities(day.identities)
        findings = Findings()
        # The scan can fail: one of the hospitals' own records, were it to leak, is found.
        record = json.loads(day.identities.read_text(encoding="utf-8").splitlines()[0])
        scan.check("control", f"patient {record['family_name']} {record['given_name']}", findings)
        scan.check("control", f"NIR {record['nir']}", findings)
        assert len(findings.found) == 2, findings.found
        findings = Findings()
        await scan.kafka(topics.kafka_options(), findings)
        scan.logs(sorted(day.log_dir.glob("reflexe_*.log")), findings)
        for name, process in day.services.items():
            scan.metrics(name, (await http.get(f"{process.url}/metrics")).text, findings)
    # indicators%: the service's schema and every replay generation of it.
    await scan.database(topics.database_url, ["referral", "capacity", "indicators%", "notify", "gateway"], findings)
    assert {"kafka", "metric", "table"} <= set(findings.scanned), findings.scanned
    assert findings.scanned["log file"] == len(day.services), findings.scanned
    assert findings.scanned["kafka"] > 100 and findings.scanned["table"] > 100, findings.scanned
    assert not findings.found, f"{len(findings.found)} leaks:\n" + "\n".join(findings.found[:20])


async def _webhooks_delivered(http: httpx.AsyncClient, day: SimulatedDay) -> bool:
    metrics = (await http.get(f"{day.services['notify'].url}/metrics")).text
    return any(line.startswith("reflexe_webhook_deliveries_total") and 'outcome="delivered"' in line
               and not line.rstrip().endswith(" 0.0") for line in metrics.splitlines())
