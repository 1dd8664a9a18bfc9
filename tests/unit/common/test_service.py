"""A service whose background loop died answers its liveness probe 503, so that the orchestrator
restarts it (it would otherwise answer HTTP while consuming nothing); the real app shell in memory."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import httpx

from reflexe_common.http import create_app
from reflexe_common.service import BackgroundTasks
from reflexe_common.settings import ServiceSettings
from tests.support.services import eventually


@asynccontextmanager
async def no_resources(_):
    yield


def app_with(tasks: BackgroundTasks | None):
    """The app shell; wired to `tasks` as service_runtime wires it."""
    app = create_app("liveness-test", ServiceSettings(OIDC_ISSUER="http://issuer.invalid"), no_resources)
    if tasks is not None:
        app.state.dead_tasks = tasks.dead
    return app


async def test_a_dead_background_loop_fails_liveness_and_a_stopped_one_does_not():
    tasks = BackgroundTasks()
    crash = asyncio.Event()

    async def consumer() -> None:
        await crash.wait()
        raise RuntimeError("Partition is not assigned")

    tasks.start("matching", consumer())
    tasks.start("relay", asyncio.Event().wait())
    transport = httpx.ASGITransport(app=app_with(tasks))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        alive = await client.get("/healthz")
        assert (alive.status_code, alive.json()) == (200, {"status": "alive"})

        crash.set()
        await eventually(lambda: tasks.dead() == ["matching"], timeout=5, what="the consumer's death")
        dead = await client.get("/healthz")
        assert (dead.status_code, dead.json()) == (503, {"status": "not alive"})

    await tasks.stop()  # a loop cancelled by the stop is not dead
    assert tasks.dead() == ["matching"]


async def test_an_app_without_background_loops_is_alive():
    transport = httpx.ASGITransport(app=app_with(None))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.get("/healthz")).status_code == 200
