"""The chaos driver's HTTP pool on a real socket: a request cancelled at the moment a slot is
released to it (a pool timeout firing is such a cancellation) must not keep that slot for good,
and requests beyond the pool's connections wait outside it (inside, each costs a pass over all)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from chaos.connections import TIMEOUT, ReclaimingTransport


async def _answer_then_wait_for_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        await reader.read()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    server = await asyncio.start_server(_answer_then_wait_for_close, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()


def _after_loop_turns(turns: int, action: Callable[[], object]) -> None:
    if turns == 0:
        action()
    else:
        asyncio.get_running_loop().call_soon(_after_loop_turns, turns - 1, action)


async def _cancel_a_queued_request_as_the_slot_frees(client: httpx.AsyncClient, url: str, turns: int) -> None:
    """One slot: a request holds it, a second waits for it and is cancelled `turns` loop turns after
    the first starts giving it back, i.e. at each moment of the hand-over in turn."""
    async with client.stream("GET", url):
        queued = asyncio.create_task(client.get(url))
        while not client._transport._pool._requests[1:]:  # the second request waits in the pool
            await asyncio.sleep(0.01)
        _after_loop_turns(turns, queued.cancel)
    await asyncio.gather(queued, return_exceptions=True)


@pytest.mark.parametrize("turns", range(8))
async def test_a_request_cancelled_as_a_slot_is_handed_to_it_leaves_the_slot_to_the_next(url: str, turns: int) -> None:
    transport = ReclaimingTransport(limits=httpx.Limits(max_connections=1))
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, pool=2.0)) as client:
        await _cancel_a_queued_request_as_the_slot_frees(client, url, turns)
        # httpcore alone keeps a never-connected connection in the only slot here (PoolTimeout).
        assert (await client.get(url)).status_code == 200


async def _answer_slowly(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def test_requests_beyond_the_connections_wait_outside_the_pool() -> None:
    server = await asyncio.start_server(_answer_slowly, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    transport = ReclaimingTransport(slots=4)
    inside: list[int] = []

    async def watch() -> None:
        while True:
            inside.append(transport.waiting_in_pool())
            await asyncio.sleep(0.005)

    try:
        async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
            watcher = asyncio.create_task(watch())
            answers = await asyncio.gather(*(client.get(url) for _ in range(60)))
            watcher.cancel()
        assert [a.status_code for a in answers] == [200] * 60
        assert max(inside) == 4  # never more requests in the pool than its connections
        assert transport.slots._value == 4  # every slot given back once its body was read
    finally:
        server.close()


async def test_a_request_finding_no_slot_in_time_is_a_pool_timeout(url: str) -> None:
    transport = ReclaimingTransport(slots=1, slot_timeout=0.2)
    async with httpx.AsyncClient(transport=transport, timeout=TIMEOUT) as client:
        async with client.stream("GET", url):
            with pytest.raises(httpx.PoolTimeout):
                await client.get(url)
        assert (await client.get(url)).status_code == 200  # the slot came back with the first body closed


def test_the_driver_bounds_every_phase_of_a_request() -> None:
    assert None not in (TIMEOUT.connect, TIMEOUT.read, TIMEOUT.write, TIMEOUT.pool)
