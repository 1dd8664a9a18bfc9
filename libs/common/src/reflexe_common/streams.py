"""Faust stream processors feeding topics to a processor (a RecordProcessor, or a BatchProcessor),
at least once, reading only committed records: every consumer of a fixed set of topics.

The processor's inbox makes redeliveries harmless and keeps state in PostgreSQL, so faust needs
no tables (a restart cannot lose state) and no topic declaration (reflexe_common.topics owns it).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import faust
from faust.tables.manager import TableManager
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as faust_aiokafka

from reflexe_common.inbox import PartitionScope, Record
from reflexe_common.kafka import KafkaAccess
from reflexe_common.metrics import CONSUMER_LAG, init_consumer
from reflexe_common.topics import Topic

# The three adjustments below depend on faust-streaming internals, read in these versions only:
# another version must be read again (the methods named below) before being added here.
FAUST_VERSIONS_READ = ("0.15.3",)
FAUST_VERSION = version("faust-streaming")
if FAUST_VERSION not in FAUST_VERSIONS_READ:
    raise ImportError(f"reflexe_common.streams was checked against faust-streaming {FAUST_VERSIONS_READ}, "
                      f"not {FAUST_VERSION}: re-read Consumer._add_gap, "
                      "AIOKafkaConsumerThread._create_worker_consumer and TableManager.on_start, "
                      "then update FAUST_VERSIONS_READ")


def _gap_without_the_current_offset():
    """faust-streaming 0.15.3 records the gap before a message as [previous + 1, offset + 1): the
    message's own offset is marked as a gap. Our topics have gaps everywhere (the outbox relay's
    Kafka transactions leave commit markers), so the committed offset barely moved and every
    restart or rebalance replayed nearly the whole log. The gap is [previous + 1, offset).
    Upstream: https://github.com/faust-streaming/faust/issues/606 (wrong offset commit with gaps).

    faust also rebuilds the partition's whole tree of gaps after adding each one
    (`IntervalTree.merge_overlaps`), a cost that grows with every gap read since the last commit:
    6 % of the referral service's CPU under the slice benchmark. Gaps read in order never overlap
    (each ends before the message that follows it), so nothing is merged here; the overlaps a seek
    back could bring only make `_new_offset` commit less far, never past an unhandled message."""

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed + 1)
        if offset_from < offset_to:
            self._gap[tp].addi(offset_from, offset_to)

    Consumer._add_gap = _add_gap


_gap_without_the_current_offset()


class _InTransaction:
    """The faust consumer as seen while its Kafka client is built: in a transaction."""

    in_transaction = True

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust-streaming builds its aiokafka consumer with isolation_level="read_committed" only under
    processing_guarantee="exactly_once", and has no setting for it: at_least_once reads
    uncommitted records, so a stream would handle the records of a Kafka transaction the outbox
    relay aborted. exactly_once is not the cure (a transactional producer per partition, offsets
    committed through transactions); the flag is raised for the building of the client alone,
    where faust reads it for nothing else (faust/transport/drivers/aiokafka.py,
    AIOKafkaConsumerThread._create_worker_consumer; no upstream setting or issue yet)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = self.consumer
        self.consumer = _InTransaction(consumer)
        try:
            return super()._create_worker_consumer(transport)
        finally:
            self.consumer = consumer


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class ReadCommittedTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport whose consumer reads read_committed, as every consumer here."""

    Consumer = _ReadCommittedConsumer


class _NoTables(TableManager):
    """faust-streaming's table manager sleeps one second before it registers the app's tables
    (faust/tables/manager.py, TableManager.on_start, "await self.sleep(1.0)"; no setting), and
    App.start waits for it: a second of every service start, and of every restart after a crash,
    before its streams subscribe. A stream app here declares no table (state is in PostgreSQL),
    so there is nothing to wait for."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


BATCH_SIZE = 50  # bounds what the first record of a batch waits for the last
SESSION_TIMEOUT_SECONDS = 10.0
log = logging.getLogger(__name__)


async def pending_batches(stream: faust.StreamT, max_size: int) -> AsyncIterator[list[faust.EventT]]:
    """The stream's events in batches of what is already pending when one arrives (up to
    `max_size`): a lone event goes alone and at once, a burst goes in few batches. Each event is
    acknowledged (its offset may be committed) once its batch is handled.

    Not faust's `take_events`, which forms its batches with a timer: with a 2 ms window its agent
    woke 500 times a second whether events came or not, about 10 % of a core per stream app on an
    idle platform (four services, five apps: half a core of two)."""
    manual = stream.noack()
    pending = manual.channel.queue
    batch: list[faust.EventT] = []
    async for event in manual.events():
        batch.append(event)
        if len(batch) < max_size and not pending.empty():
            continue
        yield batch
        for handled in batch:
            await manual.ack(handled)
        batch = []


def record_lag(app: faust.App, group: str, topic: str, tp, last_offset: int) -> None:
    """Consumer lag of a faust stream: the partition's highwater (the offset the next record
    will get) minus the offset after the last record handled. The highwater is what the
    consumer's last fetch saw, so this is exact when the stream keeps up and a lower bound
    while it catches up; the same measure as ConsumerLoop's."""
    try:
        highwater = app.consumer.highwater(tp)
    except Exception:  # no fetch yet, or a rebalance under way: keep the last value
        log.debug("no highwater for %s", tp, exc_info=True)
        return
    if highwater is not None:
        CONSUMER_LAG.labels(group, topic).set(max(0, highwater - (last_offset + 1)))


class PollProcessor(Protocol):
    """What a stream hands its records to (inbox.RecordProcessor, batch_processor.BatchProcessor)."""

    consumer: str
    scope: PartitionScope | None

    async def process_poll(self, records: list[Record]) -> None: ...

    async def close(self) -> None: ...


def stream_app(group: str, kafka: KafkaAccess, topics: list[Topic], processor: PollProcessor,
               instance: str) -> faust.App:
    app = faust.App(
        group,
        **kafka.faust_options(),
        processing_guarantee="at_least_once",
        web_enabled=False,
        store="memory://",
        # faust makes its data directory even for in-memory tables: not in the working directory.
        datadir=str(Path(tempfile.gettempdir()) / f"{group}-{instance}-data"),
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_client_id=f"{group}-{instance}",
        # A crashed process's partitions go to the others after 10 s (aiokafka's default), not
        # faust's 60 s; its heartbeats come from the consumer's own thread, every 3 s. The
        # environment (BROKER_SESSION_TIMEOUT) still overrides it, as every faust setting.
        broker_session_timeout=SESSION_TIMEOUT_SECONDS,
        TableManager=_NoTables,
    )
    # Before anything asks the app for its transport (declaring a topic does).
    app.transport = ReadCommittedTransport(app.conf.broker_consumer, app)
    names = [topic.name for topic in topics]
    init_consumer(processor.consumer, group, names)
    partitions = {topic.partitions for topic in topics}
    source = app.topic(*names, value_serializer="raw", key_serializer="raw",
                       partitions=partitions.pop() if len(partitions) == 1 else None)
    scope = processor.scope
    if scope is not None:
        # faust sends the whole new assignment after every rebalance, and what was revoked before.
        @app.on_partitions_revoked.connect
        async def on_revoked(sender, revoked, **kwargs) -> None:
            for name in names:
                scope.revoked(name, {tp.partition for tp in revoked if tp.topic == name})

        @app.on_partitions_assigned.connect
        async def on_assigned(sender, assigned, **kwargs) -> None:
            for name in names:
                await scope.assigned(name, {tp.partition for tp in assigned if tp.topic == name})

    @app.agent(source, name=processor.consumer)
    async def process(stream):
        # One agent instance handles its partitions in order (no agent concurrency: it would reorder).
        async for events in pending_batches(stream, BATCH_SIZE):
            records, last = [], {}
            for event in events:
                msg = event.message
                records.append(Record(msg.topic, msg.partition, msg.offset, msg.key, msg.value,
                                      list(msg.headers or ())))
                last[msg.tp] = msg.offset
            await processor.process_poll(records)
            for tp, offset in last.items():
                record_lag(app, group, tp.topic, tp, offset)

    return app
