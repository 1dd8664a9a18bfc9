"""Session-wide real infrastructure: one Kafka broker and one PostgreSQL cluster for the run.

Set REFLEXE_TEST_KAFKA and REFLEXE_TEST_DATABASE_URL to reuse running ones (e.g. while
iterating on one test); otherwise deploy/local/infra.sh starts throwaway ones on private ports.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from reflexe_common.topics import ensure_topics
from tests.support.infra import Infra, make_state_dir, start_infra, stop_infra

# REFLEXE_TEST_PORT_OFFSET lets two test runs on one machine each have their own broker and database.
_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))
SESSION_KAFKA_PORT = 28092 + _OFFSET
SESSION_CONTROLLER_PORT = 28093 + _OFFSET
SESSION_PG_PORT = 28432 + _OFFSET


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    if os.environ.get("REFLEXE_TEST_KAFKA") and os.environ.get("REFLEXE_TEST_DATABASE_URL"):
        yield Infra(os.environ["REFLEXE_TEST_KAFKA"], os.environ["REFLEXE_TEST_DATABASE_URL"])
        return
    state_dir = make_state_dir("reflexe-test-session-")
    try:
        yield start_infra(state_dir, SESSION_KAFKA_PORT, SESSION_CONTROLLER_PORT, SESSION_PG_PORT)
    finally:
        stop_infra(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def topics(infra: Infra) -> Infra:
    await ensure_topics(infra.kafka_bootstrap)
    return infra
