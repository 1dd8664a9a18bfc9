"""The traffic driver's HTTP connections: a pool that gives back the slots cancelled requests leave.

httpcore 1.0.9's pool (under httpx 0.28) hands a queued request a new, not yet connected
connection when another request releases its slot. If the queued request is cancelled before it
runs again (its pool timeout firing is such a cancellation), it leaves without that connection,
which is never connected, so never idle, closed or expired: the pool keeps it, and its slot, for
good (encode/httpcore#1093). On a loaded machine, while the nemesis kills processes and the
driver's event loop lags seconds behind, pool timeouts fire by the hundred; after six minutes of
the long run every slot was held by such a connection and every request ended in PoolTimeout with
no socket open. Before each request this transport drops the connections no request holds that
never connected, and the pool hands their slots to the requests waiting.

The same pool also costs, at every request's entry and exit, a pass over every waiting request
times every connection: with thousands of the actors' requests waiting on a slow platform (the
desks' reads after escalations, the HADs' answers), a profile of the driver showed nearly all its
time there, and its event loop ran up to a minute late. So requests wait for a slot here, in a
queue woken one at a time, and only as many as the pool has connections are inside it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpcore
import httpx

# Each attempt is bounded (connect, read, write); waiting for a slot has its own, longer bound,
# since the driver retries an attempt that found none.
TIMEOUT = httpx.Timeout(10.0, pool=30.0)
SLOTS = 100
# The reclaim reads the pool's private state as httpcore 1.0.9 keeps it (encode/httpcore#1093):
# under another version it is left out, and the queue below still keeps requests out of the pool.
RECLAIM_KNOWN_POOL = httpcore.__version__ == "1.0.9"


def orphans(pool) -> list:
    """The pool's connections that no request holds and that never connected."""
    held = {id(request.connection) for request in pool._requests if request.connection is not None}
    return [c for c in pool._connections
            if id(c) not in held and getattr(c, "_connection", False) is None and not getattr(c, "_connect_failed", True)]


class _SlotHeldUntilClosed(httpx.AsyncByteStream):
    """A response's body, whose slot is given back when the body is closed (its connection is busy until then)."""

    def __init__(self, stream: httpx.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ReclaimingTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, whose pool gives back the slots of connections orphaned by cancelled
    requests, and which lets into the pool no more requests than it has connections."""

    def __init__(self, slots: int = SLOTS, slot_timeout: float = TIMEOUT.pool, **kwargs) -> None:
        super().__init__(**{"limits": httpx.Limits(max_connections=slots, max_keepalive_connections=min(slots, 50)),
                            **kwargs})
        self.slots = asyncio.Semaphore(slots)
        self.slot_timeout = slot_timeout
        self.reclaimed = 0

    def waiting_in_pool(self) -> int:
        return len(self._pool._requests)

    def reclaim(self) -> int:
        if not RECLAIM_KNOWN_POOL:
            return 0
        pool = self._pool
        with pool._optional_thread_lock:
            lost = orphans(pool)
            for connection in lost:
                pool._connections.remove(connection)
        self.reclaimed += len(lost)
        return len(lost)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            async with asyncio.timeout(self.slot_timeout):
                await self.slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"no connection free within {self.slot_timeout} s", request=request) from None
        try:
            # The request's own entry into the pool then assigns the freed slots to the requests queued.
            self.reclaim()
            response = await super().handle_async_request(request)
        except BaseException:
            self.slots.release()
            raise
        response.stream = _SlotHeldUntilClosed(response.stream, self.slots.release)
        return response
