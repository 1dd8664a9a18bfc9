"""Running a service: background tasks that stop gracefully, and readiness checks on real I/O."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class BackgroundTasks:
    """Long-running loops (consumers, relay, clocks); cancelled and awaited on shutdown so each
    finishes its in-flight record, commits its offsets and releases its connections."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._report)
        self._tasks.append(task)
        return task

    @staticmethod
    def _report(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task died", exc_info=task.exception(), extra={"task": task.get_name()})

    async def stop(self) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def postgres_check(pool: asyncpg.Pool):
    async def check() -> None:
        await pool.fetchval("SELECT 1")

    return check
