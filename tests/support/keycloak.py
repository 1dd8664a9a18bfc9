"""A real Keycloak for the tests, started by deploy/local/keycloak.sh (fixture ``keycloak``).

Session-scoped and only started by the tests that ask for it: a throwaway server on
28080+REFLEXE_TEST_PORT_OFFSET (management/health 29000+offset) in a state dir of its own,
deleted after the run. Its distribution cache (REFLEXE_CACHE_DIR) is left to its default, so only
the first run on a machine downloads and builds Keycloak.

Set REFLEXE_TEST_OIDC_ISSUER (with KEYCLOAK_ADMIN_USER/KEYCLOAK_ADMIN_PASSWORD if not admin/admin)
to reuse a running local Keycloak instead, e.g. the one `deploy/local/keycloak.sh start` runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reflexe_common.local_idp import LocalIdentityProvider, split_issuer
from tests.support.infra import parse_exports

REPO_ROOT = Path(__file__).resolve().parents[2]
KEYCLOAK_SH = REPO_ROOT / "deploy" / "local" / "keycloak.sh"
_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))
SESSION_KEYCLOAK_PORT = 28080 + _OFFSET
SESSION_KEYCLOAK_MANAGEMENT_PORT = 29000 + _OFFSET
# The first run on a machine downloads (~160 MB) and builds Keycloak before its first start,
# which takes minutes on two busy cores; keycloak.sh bounds the start itself.
START_TIMEOUT_S = 1800
STOP_TIMEOUT_S = 180


@dataclass(frozen=True)
class Keycloak:
    issuer: str  # what a service is given as OIDC_ISSUER
    admin_user: str
    admin_password: str

    @property
    def base_url(self) -> str:
        return split_issuer(self.issuer)[0]

    @property
    def realm(self) -> str:
        return split_issuer(self.issuer)[1]

    def client(self) -> LocalIdentityProvider:
        """A new client of this Keycloak (use it as an async context manager)."""
        return LocalIdentityProvider(self.base_url, self.realm, self.admin_user, self.admin_password)


def run_keycloak_sh(command: str, state_dir: Path, timeout: float) -> str:
    env = dict(os.environ, REFLEXE_STATE_DIR=str(state_dir), KEYCLOAK_PORT=str(SESSION_KEYCLOAK_PORT),
               KEYCLOAK_MANAGEMENT_PORT=str(SESSION_KEYCLOAK_MANAGEMENT_PORT))
    proc = subprocess.run(["bash", str(KEYCLOAK_SH), command], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"keycloak.sh {command} failed (exit {proc.returncode})\n"
                           f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="session")
def keycloak() -> Iterator[Keycloak]:
    if issuer := os.environ.get("REFLEXE_TEST_OIDC_ISSUER"):
        yield Keycloak(issuer, os.environ.get("KEYCLOAK_ADMIN_USER", "admin"),
                       os.environ.get("KEYCLOAK_ADMIN_PASSWORD", "admin"))
        return
    state_dir = Path(tempfile.mkdtemp(prefix="reflexe-test-keycloak-"))
    try:
        exports = parse_exports(run_keycloak_sh("start", state_dir, START_TIMEOUT_S))
        yield Keycloak(exports["OIDC_ISSUER"], exports["KEYCLOAK_ADMIN_USER"], exports["KEYCLOAK_ADMIN_PASSWORD"])
    finally:
        run_keycloak_sh("clean", state_dir, STOP_TIMEOUT_S)
        shutil.rmtree(state_dir, ignore_errors=True)
