"""Session-wide real infrastructure: one Kafka broker and one PostgreSQL cluster for the run.

Set REFLEXE_TEST_KAFKA and REFLEXE_TEST_DATABASE_URL to reuse running ones (e.g. while
iterating on one test; the Kafka passwords then come from a shell that evaluated
`infra.sh env`); otherwise deploy/local/infra.sh starts throwaway ones on private ports.

Kafka authenticates every client: the session exports what `infra.sh start` prints (as a
developer's shell does), so a service built in-process connects as its own principal, under its
own ACLs; tests themselves observe and set up as the super user (Infra.kafka_options()).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator

import pytest
from aiokafka.consumer.group_coordinator import GroupCoordinator

from reflexe_common.topics import ensure_topics
from tests.support.infra import Infra, make_state_dir, start_infra, stop_infra
from tests.support.keycloak import keycloak  # noqa: F401  (the session fixture of the real Keycloak)

# REFLEXE_TEST_PORT_OFFSET lets two test runs on one machine each have their own broker and database.
_OFFSET = int(os.environ.get("REFLEXE_TEST_PORT_OFFSET", "0"))
SESSION_KAFKA_PORT = 28092 + _OFFSET
SESSION_CONTROLLER_PORT = 28093 + _OFFSET
SESSION_PG_PORT = 28432 + _OFFSET
# REFLEXE_TEST_KAFKA_NODES=3 runs the session on a Kafka cluster of three nodes (28092, 28094, 28096
# + offset), topics with three replicas, as production has them.
SESSION_KAFKA_NODES = int(os.environ.get("REFLEXE_TEST_KAFKA_NODES", "1"))


@pytest.fixture(scope="session")
def infra() -> Iterator[Infra]:
    if os.environ.get("REFLEXE_TEST_KAFKA") and os.environ.get("REFLEXE_TEST_DATABASE_URL"):
        yield Infra.from_exports({**os.environ, "KAFKA_BOOTSTRAP": os.environ["REFLEXE_TEST_KAFKA"]},
                                 os.environ["REFLEXE_TEST_DATABASE_URL"])
        return
    state_dir = make_state_dir("reflexe-test-session-")
    try:
        started = start_infra(state_dir, SESSION_KAFKA_PORT, SESSION_CONTROLLER_PORT, SESSION_PG_PORT,
                              kafka_nodes=SESSION_KAFKA_NODES)
        os.environ.update(started.kafka_env())
        yield started
    finally:
        stop_infra(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
async def topics(infra: Infra) -> Infra:
    await ensure_topics(infra.kafka())
    return infra


@pytest.fixture(scope="module", autouse=True)
async def no_consumer_outlives_its_module(request):
    """A module's in-process services stop with it. A Kafka consumer left running in the test
    process stays in its group, and a later test waiting for that group to be empty
    (mark_caught_up) timed out minutes away from the cause."""
    # The task a consumer runs while in its group; if aiokafka renames it, this guard must follow.
    routine = GroupCoordinator._coordination_routine.__qualname__
    yield
    left = [task for task in asyncio.all_tasks() if not task.done() and task.get_coro().__qualname__ == routine]
    assert not left, f"{len(left)} Kafka consumer(s) still in their group after {request.module.__name__}"
