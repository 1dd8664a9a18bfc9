"""Start/stop the real local Kafka + PostgreSQL (deploy/local/infra.sh) from pytest fixtures.

The jar cache (REFLEXE_CACHE_DIR) is left to its default so it is shared with developers'
runs: only the first start on a machine downloads Kafka.

As root, PostgreSQL runs as the ``postgres`` OS user, which must be able to reach the
state dir: ``make_state_dir`` creates one outside pytest's 0700 ``tmp_path`` tree.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_SH = REPO_ROOT / "deploy" / "local" / "infra.sh"

# The first start may download ~45 MB of jars with Maven.
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 180


@dataclass(frozen=True)
class Infra:
    kafka_bootstrap: str
    database_url: str  # postgresql://reflexe:reflexe@127.0.0.1:PORT/reflexe


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
) -> str:
    """Run one infra.sh subcommand against ``state_dir``; returns its stdout."""
    env = dict(os.environ, REFLEXE_STATE_DIR=str(state_dir))
    for name, value in (
        ("KAFKA_PORT", kafka_port),
        ("KAFKA_CONTROLLER_PORT", controller_port),
        ("PG_PORT", pg_port),
    ):
        if value is not None:
            env[name] = str(value)
    proc = subprocess.run(
        ["bash", str(INFRA_SH), command],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise InfraError(
            f"infra.sh {command} failed (exit {proc.returncode})\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc.stdout


def start_infra(state_dir: Path, kafka_port: int, controller_port: int, pg_port: int) -> Infra:
    """Start (or reuse, if already running) Kafka and PostgreSQL with state in ``state_dir``."""
    run_infra_sh("start", state_dir, START_TIMEOUT_S, kafka_port, controller_port, pg_port)
    return Infra(
        kafka_bootstrap=f"127.0.0.1:{kafka_port}",
        database_url=f"postgresql://reflexe:reflexe@127.0.0.1:{pg_port}/reflexe",
    )


def stop_infra(
    state_dir: Path,
    kafka_port: int | None = None,
    controller_port: int | None = None,
    pg_port: int | None = None,
) -> None:
    """Stop both servers and delete ``state_dir`` (the jar cache is kept)."""
    run_infra_sh("clean", state_dir, STOP_TIMEOUT_S, kafka_port, controller_port, pg_port)
