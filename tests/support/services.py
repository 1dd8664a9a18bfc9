"""Running the platform's services in tests: in-process (uvicorn in a task) or as separate
processes, plus polling with a deadline (tests never synchronise with fixed sleeps)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import uvicorn
from reflexe_common.serve import KEEP_ALIVE_SECONDS

from tests.support.infra import Infra
from tests.support.issuer import suite_issuer

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bearer(role: str, **scope: str) -> str:
    """An access token of the suite's issuer for this role and scope (finess, department, region)."""
    return suite_issuer().token(role, **scope)


def token(role: str, **scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer(role, **scope)}"}


def service_env(infra: Infra, **extra: str) -> dict[str, str]:
    return {**infra.kafka_env(), "DATABASE_URL": infra.database_url,
            "OIDC_ISSUER": suite_issuer().url, "LOG_LEVEL": "WARNING", **NOTIFY_ENV, **extra}


# Notify seals webhook secrets with a key it must be given, and sends webhooks to the tests'
# receivers on 127.0.0.1 over plain http only when told to (both refused by default). The suite's
# key is the same in every run, so a reused test database (REFLEXE_TEST_DATABASE_URL) stays readable.
NOTIFY_TEST_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"reflexe test suite: notify secret key").digest()).decode()
NOTIFY_ENV = {"NOTIFY_SECRET_KEYS": NOTIFY_TEST_KEY, "NOTIFY_ALLOW_INSECURE_WEBHOOKS": "true",
              "NOTIFY_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}


async def eventually(probe: Callable[[], Awaitable[T | None]] | Callable[[], T | None], timeout: float = 30.0,
                     interval: float = 0.05, what: str = "condition") -> T:
    """Poll until probe (a function or a coroutine function) returns something truthy; fail with
    `what` after the deadline."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@asynccontextmanager
async def serve_in_process(app, port: int | None = None, lifespan: bool = True) -> AsyncIterator[str]:
    """Run an ASGI app on a free port; yields its base URL. Without `lifespan` for an app already
    started (e.g. by an httpx.ASGITransport fixture) that a test needs on a real socket (streaming:
    ASGITransport buffers the whole response)."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                           lifespan="on" if lifespan else "off", timeout_keep_alive=KEEP_ALIVE_SECONDS))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: asyncio.sleep(0, server.started), timeout=60, what="in-process server start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 60)


class ServiceProcess:
    """A service as its own OS process (`python -m <module>`), as in production: started (again after a
    kill, on the same port), killed as in a crash, paused and resumed by signal, stopped gracefully.
    The tests and the chaos run (chaos/harness.py) both run their services through it."""

    def __init__(self, module: str, env: dict[str, str], port_env: str, log_dir: Path, port: int | None = None,
                 command: list[str] | None = None, label: str | None = None, own_session: bool = False) -> None:
        self.module = module
        self.port = port or free_port()
        self.env = {**os.environ, **env, port_env: str(self.port)}
        self.label = label or f"{module}-{self.port}"
        self.log_path = log_dir / f"{self.label}.log"
        self.command = command or [sys.executable, "-m", module]
        # In a session of its own, a Ctrl-C meant for the process that started it does not reach it.
        self.own_session = own_session
        self.starts = 0
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServiceProcess":
        self.starts += 1
        log = open(self.log_path, "ab")
        if self.starts > 1:
            log.write(f"\n---- start {self.starts} at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
        self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                     start_new_session=self.own_session)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def ready(self) -> bool:
        """Answers /readyz with 200 now."""
        try:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{self.url}/readyz", timeout=3)).status_code == 200
        except httpx.HTTPError:
            return False

    async def wait_ready(self, timeout: float = 90) -> None:
        async def ready() -> bool:
            if self.proc and self.proc.poll() is not None:
                raise AssertionError(f"{self.label} exited with {self.proc.returncode}; see {self.log_path}:\n"
                                     + self.log_path.read_text(errors="replace")[-3000:])
            return await self.ready()

        await eventually(ready, timeout=timeout, interval=0.2, what=f"{self.label} ready")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode if self.proc else None
