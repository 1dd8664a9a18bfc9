"""The chaos run, short (docs/chaos.md): three brokers, two processes of each service, Keycloak and
PostgreSQL of its own, a few hundred referrals through the public doors, one fault of each kind
(process kills every 10 s, a broker killed and back, a PostgreSQL crash, a matcher paused past its
session timeout), then the independent checker's JSON line, whose figures must all be at their
target. Then a deliberately broken variant, which the checker must catch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.keycloak import Keycloak

# A run takes minutes (the session's 300 s per test is for ordinary tests).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

REPO_ROOT = Path(__file__).resolve().parents[3]
# Its own ports: Kafka 25092-25097, PostgreSQL 21432, services 14001-14005 and 15100-15161, the
# receiver 14090 (shifted by REFLEXE_TEST_PORT_OFFSET like every test's); the session's Keycloak.
PORT_OFFSET = 6000 + int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))
RUN_TIMEOUT_S = 1500


def chaos_run(tmp_path: Path, keycloak: Keycloak, *arguments: str) -> tuple[int, dict, str]:
    """The run with the session's Keycloak (its own brokers, database and services), its JSON line
    and the checker's details."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    run_dir.chmod(0o755)  # as root, PostgreSQL's own user must reach its state dir
    env = {**os.environ, "KEYCLOAK_ADMIN_USER": keycloak.admin_user, "KEYCLOAK_ADMIN_PASSWORD": keycloak.admin_password}
    proc = subprocess.run([sys.executable, "-m", "chaos", "--port-offset", str(PORT_OFFSET), "--run-dir", str(run_dir),
                           "--keep", "--oidc-issuer", keycloak.issuer, *arguments], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line (exit {proc.returncode}):\n{proc.stderr[-5000:]}"
    print(lines[-1])  # the run's figures, for the record
    details = run_dir / "journal" / "checker-details.json"
    return proc.returncode, json.loads(lines[-1]), details.read_text() if details.exists() else proc.stderr[-5000:]


def test_nothing_is_lost_double_booked_duplicated_or_unexplained_under_faults(tmp_path: Path, keycloak: Keycloak) -> None:
    code, figures, details = chaos_run(tmp_path, keycloak, "--referrals", "300", "--seconds", "90")
    assert {name: figures[name] for name in ("lost", "double_booked", "duplicated_records", "webhooks_undelivered",
                                             "webhooks_delivered_twice", "unexplained")} == {
        "lost": 0, "double_booked": 0, "duplicated_records": 0, "webhooks_undelivered": 0,
        "webhooks_delivered_twice": 0, "unexplained": 0}, details
    assert figures["indicators_equal_oracle"] is True, details
    assert code == 0
    # The run really ran: the traffic, through every door, and one fault of each kind at least.
    assert figures["referrals"] >= 300
    assert all(figures["referrals_by_door"][door] > 0 for door in ("rest", "fhir", "hl7")), figures
    assert figures["webhooks_received"] > figures["referrals"]
    kinds = figures["faults_by_kind"]
    assert kinds["broker_kills"] == kinds["postgres_restarts"] == kinds["matcher_pauses"] == 1, kinds
    assert kinds["process_kills"] >= 3, kinds


def test_the_checker_catches_a_relay_without_transactions(tmp_path: Path, keycloak: Keycloak) -> None:
    code, figures, details = chaos_run(tmp_path, keycloak, "--referrals", "300", "--seconds", "90",
                                       "--broken", "relay-without-transactions")
    assert figures["broken"] == "relay-without-transactions"
    assert figures["duplicated_records"] > 0, (figures, details)
    assert code != 0
