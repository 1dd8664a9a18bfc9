"""`./reflexe up` as a user runs it: it stops with the error when something cannot start, and
every way it ends (the simulator finishing, Ctrl-C) stops everything it started, in bounded time.

Each run has its own directory (REFLEXE_LOCAL_DIR) and its own ports (REFLEXE_PORT_OFFSET), so
it never touches a developer's own `./reflexe up`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))  # see tests/conftest.py
# ./reflexe up's ports are 8001-8004, 8090, 19092, 19093, 15432 and Keycloak's 18080 and 19000 plus
# this offset; kept clear of the other tests' ports and below the ephemeral range.
UP_OFFSET = 12000 + _OFFSET
SERVICE_PORTS = {name: port + UP_OFFSET for name, port in
                 (("referral", 8001), ("capacity", 8002), ("indicators", 8003), ("notify", 8004), ("gateway", 8005))}
MLLP_PORT = 2575 + UP_OFFSET  # the gateway's HL7 listener
SIMULATOR_PORT = 8090 + UP_OFFSET
KAFKA_PORT, CONTROLLER_PORT, PG_PORT = 19092 + UP_OFFSET, 19093 + UP_OFFSET, 15432 + UP_OFFSET
KEYCLOAK_PORT, KEYCLOAK_MANAGEMENT_PORT = 18080 + UP_OFFSET, 19000 + UP_OFFSET
ALL_PORTS = [*SERVICE_PORTS.values(), MLLP_PORT, SIMULATOR_PORT, KAFKA_PORT, CONTROLLER_PORT, PG_PORT, KEYCLOAK_PORT,
             KEYCLOAK_MANAGEMENT_PORT]
START_SECONDS = 420  # Kafka's first start may download it; four services start on shared cores
STOP_SECONDS = 60  # services 20 s grace at most, then Kafka and PostgreSQL stop

pytestmark = pytest.mark.e2e


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)  # polling another process's progress, with a deadline


class Up:
    """One `./reflexe up` in its own session (so a failed test can still stop all of it)."""

    def __init__(self, local_dir: Path, **env: str) -> None:
        self.local_dir = local_dir
        self.output = local_dir / "up.out"
        local_dir.mkdir(parents=True, exist_ok=True)
        full_env = {**os.environ, "REFLEXE_LOCAL_DIR": str(local_dir), "REFLEXE_PORT_OFFSET": str(UP_OFFSET), **env}
        for name in ("REFLEXE_STATE_DIR", "KAFKA_PORT", "KAFKA_CONTROLLER_PORT", "PG_PORT", "KEYCLOAK_PORT",
                     "KEYCLOAK_MANAGEMENT_PORT"):
            full_env.pop(name, None)
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen([str(REPO_ROOT / "reflexe"), "up"], env=full_env, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"./reflexe up still running after {timeout} s:\n{self.text()[-3000:]}") from None

    def kill_all(self) -> None:
        """Cleanup after a failed test: the whole session, then what runs in sessions of its own."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        env = {**os.environ, "REFLEXE_STATE_DIR": str(self.local_dir / "infra"), "KAFKA_PORT": str(KAFKA_PORT),
               "KAFKA_CONTROLLER_PORT": str(CONTROLLER_PORT), "PG_PORT": str(PG_PORT),
               "KEYCLOAK_PORT": str(KEYCLOAK_PORT), "KEYCLOAK_MANAGEMENT_PORT": str(KEYCLOAK_MANAGEMENT_PORT)}
        # clean: as root, the PostgreSQL cluster lives outside the test's directory (infra.sh).
        for script, command in (("keycloak.sh", "stop"), ("infra.sh", "clean")):
            subprocess.run([str(REPO_ROOT / "deploy" / "local" / script), command], env=env, capture_output=True,
                           timeout=180)


@pytest.fixture
def up_dir(tmp_path: Path) -> Iterator[Path]:
    # Inside pytest's 0700 tree on purpose: the clone's location must not matter.
    yield tmp_path / "up"


@pytest.fixture
def held_port() -> Iterator[Callable[[int], None]]:
    sockets: list[socket.socket] = []

    def hold(port: int) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        sockets.append(s)

    yield hold
    for s in sockets:
        s.close()


def assert_everything_stopped(up: Up) -> None:
    still = [port for port in ALL_PORTS if listening(port)]
    assert not still, f"ports still listening after ./reflexe up ended: {still}\n{up.text()[-3000:]}"
    leftovers = subprocess.run(["pgrep", "-s", str(up.proc.pid)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes of ./reflexe up still running: {leftovers}"


def test_a_service_port_taken_stops_up_before_anything_starts(up_dir: Path, held_port) -> None:
    held_port(SERVICE_PORTS["capacity"])
    up = Up(up_dir)
    try:
        assert up.wait(START_SECONDS) != 0
        assert f"port {SERVICE_PORTS['capacity']} (capacity) is already in use" in up.text()
        assert "Réflexe is up" not in up.text()
        assert not listening(SERVICE_PORTS["referral"]) and not listening(KAFKA_PORT) and not listening(PG_PORT)
    finally:
        up.kill_all()


def test_postgres_port_taken_stops_up_with_the_error(up_dir: Path, held_port) -> None:
    # Another instance answers on PostgreSQL's port: up must not carry on against it.
    held_port(PG_PORT)
    up = Up(up_dir)
    try:
        assert up.wait(START_SECONDS) != 0
        text = up.text()
        assert f"port {PG_PORT} is already used by another process" in text
        assert "Kafka and PostgreSQL did not start" in text
        assert "Réflexe is up" not in text
        assert not any(listening(port) for port in (*SERVICE_PORTS.values(), SIMULATOR_PORT, KAFKA_PORT))
    finally:
        up.kill_all()


def test_the_simulator_ending_stops_services_and_infrastructure(up_dir: Path) -> None:
    up = Up(up_dir, REFLEXE_DEMO_DURATION="5")
    try:
        wait_for(lambda: "Réflexe is up" in up.text() or up.proc.poll() is not None, START_SECONDS, "the platform up")
        assert "Réflexe is up" in up.text(), up.text()[-3000:]
        assert all(listening(port) for port in SERVICE_PORTS.values())
        up.wait(30 + STOP_SECONDS)  # the simulator's 5 s, then the stop
        assert "stopping the services" in up.text() and up.text().rstrip().endswith("stopped")
        assert_everything_stopped(up)
    finally:
        up.kill_all()


def test_ctrl_c_stops_everything_in_bounded_time(up_dir: Path) -> None:
    up = Up(up_dir)
    try:
        wait_for(lambda: "Réflexe is up" in up.text() or up.proc.poll() is not None, START_SECONDS, "the platform up")
        assert "Réflexe is up" in up.text(), up.text()[-3000:]
        os.killpg(up.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        started = time.monotonic()
        assert up.wait(STOP_SECONDS) == 130
        assert time.monotonic() - started < STOP_SECONDS
        assert_everything_stopped(up)
    finally:
        up.kill_all()
