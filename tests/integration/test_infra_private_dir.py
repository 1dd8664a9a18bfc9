"""deploy/local/infra.sh works from a clone the `postgres` OS user cannot enter.

As root, PostgreSQL runs as `postgres`; a clone under /root or in a 0700 temporary directory
is out of that user's reach, so the cluster must live where it can reach it (and go with
`clean`). Non-root runs take the same path through the script, with the cluster in the state dir.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import asyncpg
import pytest

from tests.support.infra import run_infra_sh, start_infra, stop_infra

_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))  # see tests/conftest.py
KAFKA_PORT = 30092 + _OFFSET
CONTROLLER_PORT = 30093 + _OFFSET
PG_PORT = 26432 + _OFFSET


def _pg_dir(status: str) -> Path:
    match = re.search(r"^pg dir:\s+(\S+)$", status, re.MULTILINE)
    assert match, status
    return Path(match.group(1))


@pytest.mark.asyncio
async def test_infra_runs_from_a_state_dir_inside_a_private_directory(tmp_path: Path) -> None:
    private = tmp_path / "home"
    private.mkdir()
    private.chmod(0o700)  # like /root, or what mkdtemp makes
    state_dir = private / "clone" / ".local" / "infra"
    pg_dir: Path | None = None
    try:
        infra = start_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
        conn = await asyncpg.connect(infra.database_url, timeout=10)
        try:
            assert await conn.fetchval("SELECT current_user") == "reflexe"
        finally:
            await conn.close()
        status = run_infra_sh("status", state_dir, 60, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
        assert "postgresql: running (pid" in status
        pg_dir = _pg_dir(status)
        assert (pg_dir / "data" / "PG_VERSION").is_file()
        if os.geteuid() == 0:
            # Outside the private tree, private to the postgres user, and shown from the state dir.
            assert not pg_dir.is_relative_to(private)
            assert (pg_dir.stat().st_mode & 0o777) == 0o700
            assert (state_dir / "postgres").resolve() == pg_dir
    finally:
        stop_infra(state_dir, KAFKA_PORT, CONTROLLER_PORT, PG_PORT)
    assert not state_dir.exists()
    assert pg_dir is not None and not pg_dir.exists()  # clean deletes the cluster wherever it lives
