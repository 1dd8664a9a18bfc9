"""A TCP load balancer in front of a service's processes, as a Kubernetes Service is in production:
each connection goes to the next process that accepts it, so a process killed by the nemesis costs
its clients their open connections (which they retry), not the service."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging

log = logging.getLogger("chaos.balancer")


class Balancer:
    def __init__(self, name: str, port: int, backends: list[int]) -> None:
        self.name, self.port, self.backends = name, port, backends
        self._turn = itertools.count()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for i in range(len(self.backends)):
            port = self.backends[(first + i) % len(self.backends)]
            try:
                return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
            except (OSError, TimeoutError):
                continue
        return None

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = await self._connect()
        if backend is None:  # every process down: the client sees a refused service and retries
            client_writer.close()
            return
        backend_reader, backend_writer = backend
        await asyncio.gather(_pipe(client_reader, backend_writer), _pipe(backend_reader, client_writer),
                             return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
