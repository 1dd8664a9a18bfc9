"""Running a service: the resources every service holds (pool, dead letters, Kafka loops) with
a graceful stop, and readiness checks on real I/O."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import faust
from fastapi import FastAPI

from reflexe_common.db import create_pool, prepare_schema
from reflexe_common.inbox import ConsumerLoop, DeadLetters, Handler, PartitionScope, RecordProcessor
from reflexe_common.kafka import KafkaAccess, kafka_access
from reflexe_common.outbox import OutboxRelay
from reflexe_common.settings import ServiceSettings
from reflexe_common.streams import PollProcessor, stream_app
from reflexe_common.topics import InboundKind, Topic, ensure_topics

log = logging.getLogger(__name__)

# Every step of a stop is bounded: with the broker or the database gone, a client's stop can wait
# forever (faust's consumer thread dies on a cancelled fetch and never reports back), and a
# process that lingers keeps its place in its consumer groups. Worst case, all steps together stay
# well under serve.STOP_DEADLINE_SECONDS, the process's own last resort.
STREAMS_STOP_SECONDS = 4.0
TASKS_STOP_SECONDS = 3.0
CLIENT_STOP_SECONDS = 2.0


async def bounded_stop(what: str, stop: Awaitable[Any], seconds: float) -> bool:
    """Run one stop step for at most ``seconds``; True if it finished. A step that overruns is
    cancelled and not awaited (a stop that ignores cancellation must not hold the process)."""
    task = asyncio.ensure_future(stop)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("stop step timed out; carrying on", extra={"step": what, "seconds": seconds})
        return False
    if not task.cancelled() and task.exception() is not None:
        log.warning("stop step failed; carrying on", exc_info=task.exception(), extra={"step": what})
        return False
    return True


def _died(task: asyncio.Task[Any]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is not None


class BackgroundTasks:
    """Long-running loops (consumers, relay, clocks); cancelled and awaited on shutdown so each
    finishes its in-flight record, commits its offsets and releases its connections."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def dead(self) -> list[str]:
        """The loops that ended with an error: the process still answers HTTP but no longer
        consumes, relays or fires clocks, so its liveness fails and the orchestrator restarts it."""
        return sorted(t.get_name() for t in self._tasks if _died(t))

    def start(self, name: str, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._report)
        self._tasks.append(task)
        return task

    @staticmethod
    def _report(task: asyncio.Task[Any]) -> None:
        if _died(task):
            log.error("background task died", exc_info=task.exception(), extra={"task": task.get_name()})

    async def stop(self, timeout: float = TASKS_STOP_SECONDS) -> None:
        for task in reversed(self._tasks):
            task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            if pending:  # e.g. a consumer's final offset commit waiting for a broker that is gone
                log.warning("background tasks still stopping; leaving them",
                            extra={"tasks": sorted(t.get_name() for t in pending), "seconds": timeout})


@dataclass
class Runtime:
    """What a running service holds; everything started through it is stopped with it."""

    settings: ServiceSettings
    schema: str
    kafka: KafkaAccess
    pool: asyncpg.Pool
    dead_letters: DeadLetters
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    streams: list[tuple[faust.App, PollProcessor]] = field(default_factory=list)

    def relay_outbox(self) -> None:
        self.tasks.start("outbox-relay", OutboxRelay(self.settings.database_url, self.schema,
                                                     self.kafka).run())

    def consume_inbound(self, group: str, kind: InboundKind, handler: Handler) -> ConsumerLoop:
        """Every sender's inbound topic of this kind (subscribed by pattern, so a system registered
        later is picked up); a command claiming another establishment than its sender's is
        dead-lettered before the handler sees it."""
        processor = RecordProcessor(group, self.pool, self.dead_letters, handler, verify=kind.verify_sender)
        loop = ConsumerLoop(self.kafka, group, kind.pattern, processor, client_id=f"{group}-{self.settings.instance}")
        self.tasks.start(group, loop.run())
        return loop

    async def stream(self, group: str, topics: list[Topic], name: str, handler: Handler,
                     scope: PartitionScope | None = None) -> None:
        """A faust stream processor (consumer group `group`) feeding the idempotent processor
        (inbox consumer `name`); ``scope``: the single writer's per-partition state and fencing
        (inbox.PartitionScope)."""
        await self.stream_to(group, topics, RecordProcessor(name, self.pool, self.dead_letters, handler, scope=scope))

    async def stream_to(self, group: str, topics: list[Topic], processor: PollProcessor) -> None:
        """A faust stream processor (consumer group `group`) feeding `processor`, closed after the
        stream stops."""
        app = stream_app(group, self.kafka, topics, processor, self.settings.instance)
        self.streams.append((app, processor))  # before starting it: a stop during its start stops it too
        await app.start()


@asynccontextmanager
async def service_runtime(app: FastAPI, settings: ServiceSettings, schema: str, migrations: str,
                          pool_size: int = 10) -> AsyncIterator[Runtime]:
    """Topics (created, or verified in production), the schema's pool and migrations (applied, or
    verified), dead letters and readiness checks; on exit, streams and loops finish their record
    in hand and commit, then connections close.
    On Kafka the service is the principal named like its schema (kafka_acls.py)."""
    kafka = kafka_access(settings, schema)
    await ensure_topics(kafka, create=settings.kafka_create_topics)
    pool = await create_pool(settings.database_url, schema, max_size=pool_size)
    await prepare_schema(pool, schema, migrations, settings.migrate_at_start)
    dead_letters = DeadLetters(kafka)
    await dead_letters.start()
    app.state.pool = pool
    app.state.readiness_checks.update(postgres=postgres_check(pool), kafka=dead_letters.check)
    runtime = Runtime(settings, schema, kafka, pool, dead_letters)
    app.state.dead_tasks = runtime.tasks.dead
    try:
        yield runtime
    finally:
        await bounded_stop("streams", asyncio.gather(*(stream.stop() for stream, _ in runtime.streams)),
                           STREAMS_STOP_SECONDS)
        await bounded_stop("stream processors", asyncio.gather(*(p.close() for _, p in runtime.streams)),
                           CLIENT_STOP_SECONDS)
        await runtime.tasks.stop()
        await bounded_stop("dead letters", dead_letters.stop(), CLIENT_STOP_SECONDS)
        if not await bounded_stop("database pool", pool.close(), CLIENT_STOP_SECONDS):
            pool.terminate()


def postgres_check(pool: asyncpg.Pool):
    async def check() -> None:
        await pool.fetchval("SELECT 1")

    return check
