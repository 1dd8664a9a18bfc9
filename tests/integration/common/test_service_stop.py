"""A service asked to stop after its Kafka broker went away still exits, and in bounded time.

Before, capacity and indicators (faust streams) never finished their shutdown without a
broker, and a later broker on the same port saw them rejoin their consumer groups. The four
services run as separate processes on a broker and database of this test's own, since the
broker is stopped under them.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reflexe_common.serve import EXIT_STOP_OVERRAN
from tests.support.infra import Infra, make_state_dir, start_infra, stop_infra
from tests.support.platform import running_platform
from tests.support.services import ServiceProcess

_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))  # see tests/conftest.py
KAFKA_PORT = 30094 + _OFFSET
CONTROLLER_PORT = 30095 + _OFFSET
PG_PORT = 26434 + _OFFSET
STOP_BOUND_SECONDS = 20.0

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = make_state_dir("reflexe-stop-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def own_infra(state_dir: Path) -> Iterator[Infra]:
    try:
        yield start_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
    finally:
        stop_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def stop_broker(state_dir: Path) -> None:
    """The broker alone goes away (SIGKILL: it has no chance to say goodbye to its clients)."""
    pid = int((state_dir / "kafka" / "kafka.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"broker {pid} still alive"
        time.sleep(0.1)  # polling a process's end; nothing to await


@pytest.mark.asyncio
async def test_services_stop_within_the_bound_after_kafka_is_gone(own_infra: Infra, state_dir: Path,
                                                                 tmp_path: Path) -> None:
    async with running_platform(own_infra, tmp_path) as processes:
        stop_broker(state_dir)
        for process in processes.values():
            assert process.proc is not None
            process.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        exits: dict[str, tuple[int | None, float]] = {}
        while len(exits) < len(processes) and time.monotonic() - started < STOP_BOUND_SECONDS:
            for name, process in processes.items():
                if name not in exits and process.proc.poll() is not None:
                    exits[name] = (process.proc.returncode, time.monotonic() - started)
            time.sleep(0.1)  # polling processes' exits with a deadline
        still_running = sorted(set(processes) - set(exits))
        logs = {name: _tail(processes[name]) for name in still_running}
        assert not still_running, f"still running {STOP_BOUND_SECONDS} s after SIGTERM: {still_running}\n{logs}"
        # Each finished its own bounded stop, rather than being cut short by its last resort.
        assert all(code != EXIT_STOP_OVERRAN for code, _ in exits.values()), exits


def _tail(process: ServiceProcess) -> str:
    return process.log_path.read_text(errors="replace")[-2000:]
