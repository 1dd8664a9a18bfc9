"""The desks' live stream: replay from PostgreSQL, then follow live through LISTEN/NOTIFY.

Every entry is stored (with its per-department number) in the consumer's transaction before it
is told, and the numbers of one department commit in order (store.append_desk_event). A reader
that has sent n therefore asks only "what is after n?": on connecting (n = Last-Event-ID), after
a gap, after the listener lost its connection, or when it fell too far behind. Notifications
carry the entry itself when it fits, so a reader keeping up does not query the database at all.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from reflexe_notify.adapters import store

log = logging.getLogger(__name__)
RESYNC = object()  # "read from the database": the notification stream may have a hole


@dataclass(frozen=True)
class Entry:
    seq: int
    payload: str | None  # None: too long for a notification, read it from the table


class _Reader:
    def __init__(self, capacity: int) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue(capacity)

    def offer(self, item: object) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:  # too slow: drop what is queued, catch up from the table
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(RESYNC)


class DeskStreamHub:
    def __init__(self, pool: asyncpg.Pool, database_url: str, schema: str, reader_capacity: int = 1000) -> None:
        self._pool = pool
        self._database_url = database_url
        self._schema = schema
        self._capacity = reader_capacity
        self._readers: dict[str, set[_Reader]] = defaultdict(set)
        self.listening = asyncio.Event()

    async def run(self) -> None:
        """Listen until cancelled; after any loss of the listening connection, readers resync."""
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._database_url, server_settings={"search_path": self._schema})
                lost = asyncio.Event()
                conn.add_termination_listener(lambda *_: lost.set())
                await conn.add_listener(store.DESK_CHANNEL, self._notified)
                self.listening.set()
                self._broadcast_resync()  # what was committed while not listening
                await lost.wait()
                log.warning("desk stream listener lost its connection; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("desk stream listener failed; reconnecting")
            finally:
                self.listening.clear()
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(0.5)

    def _notified(self, _conn: object, _pid: int, _channel: str, message: str) -> None:
        department, seq, payload = message.split("\n", 2)
        readers = self._readers.get(department)
        if readers:
            entry = Entry(int(seq), payload or None)
            for reader in readers:
                reader.offer(entry)

    def tell(self, entries: Sequence[store.StreamEntry]) -> None:
        """Entries this process has just committed, told to its readers without waiting for their
        notification to come back from PostgreSQL (which then finds them sent: skipped)."""
        for entry in entries:
            for reader in self._readers.get(entry.stream, ()):
                reader.offer(Entry(entry.seq, entry.payload))

    def _broadcast_resync(self) -> None:
        for readers in self._readers.values():
            for reader in readers:
                reader.offer(RESYNC)

    def readers(self, department: str) -> int:
        return len(self._readers.get(department, ()))

    async def follow(self, department: str, after: int) -> AsyncIterator[tuple[int, str]]:
        """(seq, payload) of the department's entries numbered above `after`, then live ones, in
        order, without a gap, each once. Runs until the consumer stops iterating."""
        reader = _Reader(self._capacity)
        self._readers[department].add(reader)  # before reading the table: nothing falls in between
        last = after
        try:
            while True:
                async for seq, payload in self._catch_up(department, last):
                    last = seq
                    yield seq, payload
                while True:
                    item = await reader.queue.get()
                    if item is RESYNC:
                        break
                    assert isinstance(item, Entry)
                    if item.seq <= last:
                        continue  # already sent from the table
                    if item.seq != last + 1 or item.payload is None:
                        break  # a hole, or an entry to read: from the table
                    last = item.seq
                    yield item.seq, item.payload
        finally:
            readers = self._readers.get(department)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._readers[department]

    async def _catch_up(self, department: str, after: int) -> AsyncIterator[tuple[int, str]]:
        while True:
            batch = await store.desk_events_after(self._pool, department, after, 500)
            for row in batch:
                yield row
            if len(batch) < 500:
                return
            after = batch[-1][0]


async def prune_periodically(pool: asyncpg.Pool, keep_days: float, every_seconds: float = 3600) -> None:
    while True:
        try:
            removed = await store.prune_desk_events(pool, keep_days)
            if removed:
                log.info("desk stream entries pruned", extra={"removed": removed})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning the desk stream failed")
        await asyncio.sleep(every_seconds)
