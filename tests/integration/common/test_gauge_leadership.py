"""Gauges computed from the database are exported once per service, whatever its replicas: two
in-process exporters on one real PostgreSQL, only the leader (advisory lock) exports; when its
session dies the other takes over and the old one exports nothing."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from reflexe_common.leadership import Leadership, export_while_leader
from reflexe_common.metrics import SnapshotGauges
from tests.support.services import eventually

pytestmark = pytest.mark.integration
FAMILY = {"reflexe_had_live_places": ("live places", ("department", "had"))}


class Replica:
    def __init__(self, database_url: str, schema: str, name: str) -> None:
        self.registry = CollectorRegistry()
        self.gauges = SnapshotGauges(FAMILY, registry=self.registry)
        self.leadership = Leadership(database_url, schema, "gauges", retry_seconds=0.1, check_seconds=0.2)
        self.name = name
        self.tasks: list[asyncio.Task] = []

    def start(self, compute) -> None:
        self.tasks = [asyncio.create_task(self.leadership.run()),
                      asyncio.create_task(export_while_leader(self.gauges, compute, 0.1, self.leadership))]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def exported(self) -> dict[tuple[str, str], float]:
        return {(s.labels["department"], s.labels["had"]): s.value
                for family in self.registry.collect() for s in family.samples}


@pytest.fixture
async def places(infra):
    """A table of live places in a schema of its own (what the capacity snapshot reads)."""
    schema = f"gauges_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(infra.database_url)
    await conn.execute(f'CREATE SCHEMA "{schema}"; CREATE TABLE "{schema}".places (department text, had text, n int)')
    await conn.execute(f'INSERT INTO "{schema}".places VALUES (\'34\', \'340000017\', 2), (\'34\', \'340000025\', 1)')
    pool = await asyncpg.create_pool(infra.database_url, min_size=1, max_size=2, server_settings={"search_path": schema})
    try:
        yield pool, schema
    finally:
        await pool.close()
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.close()


async def test_two_replicas_export_the_gauge_once_and_hand_over(infra, places):
    pool, schema = places

    async def compute():
        rows = await pool.fetch("SELECT department, had, n FROM places ORDER BY had")
        return {"reflexe_had_live_places": [((r["department"], r["had"]), float(r["n"])) for r in rows]}

    a, b = Replica(infra.database_url, schema, "a"), Replica(infra.database_url, schema, "b")
    a.start(compute)
    await eventually(lambda: asyncio.sleep(0, a.exported()), timeout=10, what="replica a exporting")
    b.start(compute)
    try:
        # b runs, but a leads: three places in all, not six.
        for _ in range(10):
            await asyncio.sleep(0.1)  # let b try its luck at the lock a few times
            assert not b.leadership.is_leader and b.exported() == {}
        assert sum(a.exported().values()) + sum(b.exported().values()) == 3

        # a's database session dies (crash, network): it stops exporting at once; a leader is
        # elected again (either replica) and the gauge is exported once again.
        killer = await asyncpg.connect(infra.database_url)
        try:
            killed = await killer.fetchval(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l WHERE l.locktype = 'advisory' "
                "AND l.granted AND l.classid = 7263004 AND l.objid = hashtext($1)::oid", f"{schema}/gauges")
        finally:
            await killer.close()
        assert killed == 1

        def exported_once():
            leaders = [r for r in (a, b) if r.leadership.is_leader]
            followers = [r for r in (a, b) if not r.leadership.is_leader]
            return (len(leaders) == 1 and leaders[0].exported() == {("34", "340000017"): 2.0, ("34", "340000025"): 1.0}
                    and all(f.exported() == {} for f in followers)) and leaders[0]

        leader = await eventually(lambda: asyncio.sleep(0, exported_once()), timeout=10, what="one leader exporting")
        # The leader stops (a rolling update): the other replica takes over.
        other = b if leader is a else a
        await leader.stop()
        assert leader.exported() == {}
        assert await eventually(lambda: asyncio.sleep(0, exported_once()), timeout=10, what="handover") is other
    finally:
        await a.stop()
        await b.stop()
