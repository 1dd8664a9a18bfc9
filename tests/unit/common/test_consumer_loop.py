"""The plain consumer loop around a partition revoked while its records are being handled (a
rebalance during a slow batch, as when PostgreSQL restarts): the loop goes on with the partitions it
still has and never claims the offsets of the one it lost. It once asked aiokafka for the lost
partition's high watermark, whose assertion killed the loop and left the service up but deaf."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from aiokafka import TopicPartition

from reflexe_common.inbox import ConsumerLoop
from reflexe_common.kafka import KafkaAccess

KEPT, LOST = TopicPartition("t", 0), TopicPartition("t", 1)


class RebalancingConsumer:
    """Two partitions; the second is revoked while the first poll is being handled."""

    def __init__(self) -> None:
        self.assigned = {KEPT, LOST}
        self.polls = 0
        self.committed: list[dict[TopicPartition, int]] = []

    async def start(self) -> None: ...

    def subscribe(self, *args, **kwargs) -> None: ...

    async def getmany(self, timeout_ms: int, max_records: int):
        self.polls += 1
        if self.polls == 1:
            return {tp: [SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=o, key=b"k", value=b"v",
                                         headers=[]) for o in (10, 11)] for tp in (KEPT, LOST)}
        await asyncio.sleep(0.01)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def highwater(self, tp: TopicPartition) -> int:
        assert tp in self.assigned, "Partition is not assigned"  # as aiokafka does
        return 20

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert set(offsets) <= self.assigned, offsets
        self.committed.append(dict(offsets))

    async def stop(self) -> None: ...


async def test_a_partition_revoked_during_its_batch_neither_kills_the_loop_nor_is_committed() -> None:
    consumer = RebalancingConsumer()

    async def process_poll(records) -> None:
        consumer.assigned.discard(LOST)  # the rebalance lands while the batch is handled

    processor = SimpleNamespace(consumer="test-revoked", process_poll=process_poll)
    loop = ConsumerLoop(KafkaAccess("127.0.0.1:9"), "test-revoked", "^t$", processor)  # type: ignore[arg-type]
    loop._consumer = consumer  # the broker's side, scripted
    running = asyncio.create_task(loop.run())
    try:
        async with asyncio.timeout(5):
            while not consumer.committed or consumer.polls < 3:
                assert not running.done(), running.exception()
                await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert consumer.committed[0] == {KEPT: 12}
    assert all(LOST not in offsets for offsets in consumer.committed)
