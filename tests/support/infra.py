"""Start/stop the real local Kafka + PostgreSQL (deploy/local/infra.sh) from pytest fixtures.

The jar cache (REFLEXE_CACHE_DIR) is left to its default so it is shared with developers'
runs: only the first start on a machine downloads Kafka.

As root, PostgreSQL runs as the ``postgres`` OS user, which must be able to reach the
state dir: ``make_state_dir`` creates one outside pytest's 0700 ``tmp_path`` tree.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reflexe_common.kafka import KafkaAccess, password_variable
from reflexe_common.topics import TopicSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_SH = REPO_ROOT / "deploy" / "local" / "infra.sh"

# The first start may download ~45 MB of jars with Maven.
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 180


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    database_url: str  # postgresql://reflexe:reflexe@127.0.0.1:PORT/reflexe
    # Kafka principal -> SCRAM password: `admin` (the super user) and each service's own.
    kafka_passwords: dict[str, str] = field(default_factory=dict)
    kafka_security_protocol: str = "SASL_PLAINTEXT"
    # How many copies of each topic the platform makes on this cluster (reflexe_common.topics).
    topic_replication_factor: int = 1
    topic_min_insync_replicas: int = 1

    def kafka(self, principal: str = "admin") -> KafkaAccess:
        """How `principal` connects; tests observe and set up as the super user by default."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return KafkaAccess(self.kafka_bootstrap)
        return KafkaAccess(self.kafka_bootstrap, self.kafka_security_protocol, "SCRAM-SHA-512", principal,
                           self.kafka_passwords.get(principal))

    def kafka_options(self, principal: str = "admin") -> dict[str, Any]:
        """aiokafka keyword arguments (bootstrap_servers included) for `principal`."""
        return self.kafka(principal).options()

    def kafka_env(self, with_admin: bool = False) -> dict[str, str]:
        """What `infra.sh env` exports for Kafka: each service then connects as itself. The super
        user's password only on request: no service process needs it."""
        env = {"KAFKA_BOOTSTRAP": self.kafka_bootstrap, "KAFKA_SECURITY_PROTOCOL": self.kafka_security_protocol,
               "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
               "KAFKA_TOPIC_REPLICATION_FACTOR": str(self.topic_replication_factor),
               "KAFKA_TOPIC_MIN_INSYNC_REPLICAS": str(self.topic_min_insync_replicas)}
        return env | {password_variable(name): password for name, password in self.kafka_passwords.items()
                      if with_admin or name != "admin"}

    @classmethod
    def from_exports(cls, exports: dict[str, str], database_url: str | None = None) -> Infra:
        """From infra.sh's exports (or a shell that evaluated them)."""
        passwords = {m.group(1).lower(): value for name, value in exports.items()
                     if (m := re.fullmatch(r"REFLEXE_KAFKA_([A-Z_]+)_PASSWORD", name))}
        return cls(exports["KAFKA_BOOTSTRAP"], database_url or exports["DATABASE_URL"], passwords,
                   exports.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                   int(exports.get("KAFKA_TOPIC_REPLICATION_FACTOR", "1")),
                   int(exports.get("KAFKA_TOPIC_MIN_INSYNC_REPLICAS", "1")))

    def topic_settings(self) -> TopicSettings:
        return TopicSettings(KAFKA_TOPIC_REPLICATION_FACTOR=self.topic_replication_factor,
                             KAFKA_TOPIC_MIN_INSYNC_REPLICAS=self.topic_min_insync_replicas)


class InfraError(RuntimeError):
    pass


def make_state_dir(prefix: str = "reflexe-infra-") -> Path:
    """A fresh state dir that the ``postgres`` user can traverse (mkdtemp makes it 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def run_infra_sh(
    command: str,
    state_dir: Path,
    timeout: float,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    pg_port: int | None = None,
    *arguments: str,
    kafka_nodes: int | None = None,
) -> str:
    """Run one infra.sh subcommand (with its arguments) against ``state_dir``; returns its stdout."""
    env = dict(os.environ, REFLEXE_STATE_DIR=str(state_dir))
    env.pop("REFLEXE_KAFKA_NODES", None)  # the state dir's own count, unless asked otherwise
    for name, value in (
        ("KAFKA_PORT", kafka_port),
        ("KAFKA_CONTROLLER_PORT", controller_port),
        ("PG_PORT", pg_port),
        ("REFLEXE_KAFKA_NODES", kafka_nodes),
    ):
        if value is not None:
            env[name] = str(value)
    proc = subprocess.run(
        ["bash", str(INFRA_SH), command, *arguments],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise InfraError(
            f"infra.sh {' '.join((command, *arguments))} failed (exit {proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


def start_infra(state_dir: Path, kafka_port: int, controller_port: int, pg_port: int,
                kafka_nodes: int | None = None) -> Infra:
    """Start (or reuse, if already running) Kafka and PostgreSQL with state in ``state_dir``;
    with ``kafka_nodes``, a Kafka cluster of that many nodes (ports from ``kafka_port`` and
    ``controller_port`` up, two by two: infra.sh)."""
    out = run_infra_sh("start", state_dir, START_TIMEOUT_S, kafka_port, controller_port, pg_port,
                       kafka_nodes=kafka_nodes)
    return Infra.from_exports(parse_exports(out))


def parse_exports(out: str) -> dict[str, str]:
    """infra.sh's `export NAME=value` lines."""
    return dict(m.groups() for m in re.finditer(r"^export ([A-Z0-9_]+)=(.*)$", out, re.MULTILINE))


def stop_infra(
    state_dir: Path,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    pg_port: int | None = None,
) -> None:
    """Stop both servers and delete ``state_dir`` (the jar cache is kept)."""
    run_infra_sh("clean", state_dir, STOP_TIMEOUT_S, kafka_port, controller_port, pg_port)


def private_infra(name: str, prefix: str, kafka_port: int, controller_port: int, pg_port: int,
                  kafka_nodes: int | None = None) -> tuple[Any, Any]:
    """Module fixtures `state_dir` and `name` (an Infra) for a module that needs a broker and a
    database of its own, on its own ports, beside the session's; a module assigns both:
    `state_dir, cluster = private_infra("cluster", ...)`."""

    @pytest.fixture(scope="module", name="state_dir")
    def state_dir_fixture() -> Iterator[Path]:
        path = make_state_dir(prefix)
        yield path
        shutil.rmtree(path, ignore_errors=True)

    @pytest.fixture(scope="module", name=name)
    def infra_fixture(state_dir: Path) -> Iterator[Infra]:
        try:
            yield start_infra(state_dir, kafka_port, controller_port, pg_port, kafka_nodes=kafka_nodes)
        finally:
            stop_infra(state_dir, kafka_port, controller_port, pg_port)

    return state_dir_fixture, infra_fixture
