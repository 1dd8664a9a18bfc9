"""One leader per service schema for a given duty, elected by a PostgreSQL session advisory lock
(the mechanism the outbox relay uses): the replica whose session holds the lock leads, for as
long as that session lives; when it dies (crash, network) PostgreSQL releases the lock and
another replica takes it within `retry_seconds`.

Used to export the gauges computed from the database once per service, not once per replica
(`export_while_leader`): summed over replicas they would count every place twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from reflexe_common.metrics import SnapshotGauges

log = logging.getLogger(__name__)

_LOCK_NAMESPACE = 7_263_004  # beside the migrations' (…001) and the outbox relay's (…002)
Samples = dict[str, list[tuple[tuple[str, ...], float]]]


class Leadership:
    def __init__(self, database_url: str, schema: str, duty: str,
                 retry_seconds: float = 2.0, check_seconds: float = 2.0) -> None:
        self._database_url = database_url
        self._schema = schema
        self._key = f"{schema}/{duty}"
        self._retry = retry_seconds
        self._check = check_seconds
        self._conn: asyncpg.Connection | None = None
        self._listeners: list[Callable[[bool], None]] = []
        self.is_leader = False

    def on_change(self, listener: Callable[[bool], None]) -> None:
        """`listener(is_leader)` runs at once on every gain and loss of leadership."""
        self._listeners.append(listener)

    async def try_once(self) -> bool:
        """One attempt (at start-up, so the leader's first values are there before it is ready)."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._database_url, server_settings={
                    "application_name": f"reflexe-{self._schema}-leader"})
            got = await self._conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE, self._key)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("leadership attempt failed", extra={"duty": self._key}, exc_info=True)
            await self._close()
            got = False
        self._set(bool(got))
        return bool(got)

    async def run(self) -> None:
        """Try to lead forever; while leading, check every `check_seconds` that the session holding
        the lock is alive (leadership lasts only as long as it)."""
        try:
            while True:
                if self.is_leader:
                    await asyncio.sleep(self._check)
                    try:
                        await asyncio.wait_for(self._conn.fetchval("SELECT 1"), timeout=self._check)
                    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                        log.warning("leadership lost", extra={"duty": self._key})
                        self._set(False)
                        await self._close()
                else:
                    if not await self.try_once():
                        await asyncio.sleep(self._retry)
        finally:
            self._set(False)
            await self._close()  # releases the lock: a successor need not wait for a timeout

    def _set(self, leader: bool) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        log.info("leadership %s", "gained" if leader else "released", extra={"duty": self._key})
        for listener in self._listeners:
            try:
                listener(leader)
            except Exception:
                log.exception("leadership listener failed")

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except Exception:
                conn.terminate()


async def export_while_leader(gauges: SnapshotGauges, compute: Callable[[], Awaitable[Samples]], every: float,
                              leadership: Leadership) -> None:
    """The leader recomputes `gauges` every `every` seconds; any other replica exports none (the
    leadership listener clears them the moment leadership is lost). A failed refresh keeps the
    previous snapshot."""
    leadership.on_change(lambda leader: None if leader else gauges.replace({}))
    while True:
        if leadership.is_leader:
            try:
                samples = await compute()
                if leadership.is_leader:  # lost while computing: export nothing
                    gauges.replace(samples)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gauges not refreshed")
        await asyncio.sleep(every)


async def lead_and_export(gauges: SnapshotGauges, compute: Callable[[], Awaitable[Samples]], every: float,
                          database_url: str, schema: str, start) -> Leadership:
    """Wiring for a service: elect, export the first snapshot now if leading, then keep both
    going as background tasks (`start(name, coroutine)`)."""
    leadership = Leadership(database_url, schema, "gauges")
    if await leadership.try_once():
        gauges.replace(await compute())
    start(f"{schema}-gauges-leadership", leadership.run())
    start(f"{schema}-gauges", export_while_leader(gauges, compute, every, leadership))
    return leadership
