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
"""

from __future__ import annotations

import httpx

# Each attempt is bounded (connect, read, write); waiting for a slot has its own, longer bound,
# since the driver retries an attempt that found none.
TIMEOUT = httpx.Timeout(10.0, pool=30.0)
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50)


def orphans(pool) -> list:
    """The pool's connections that no request holds and that never connected."""
    held = {id(request.connection) for request in pool._requests if request.connection is not None}
    return [c for c in pool._connections
            if id(c) not in held and getattr(c, "_connection", False) is None and not getattr(c, "_connect_failed", True)]


class ReclaimingTransport(httpx.AsyncHTTPTransport):
    """httpx's transport, whose pool gives back the slots of connections orphaned by cancelled requests."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{"limits": LIMITS, **kwargs})
        self.reclaimed = 0

    def reclaim(self) -> int:
        pool = self._pool
        with pool._optional_thread_lock:
            lost = orphans(pool)
            for connection in lost:
                pool._connections.remove(connection)
        self.reclaimed += len(lost)
        return len(lost)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        # The request's own entry into the pool then assigns the freed slots to the requests queued.
        self.reclaim()
        return await super().handle_async_request(request)
