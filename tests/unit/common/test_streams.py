"""The offsets faust commits over the gaps that transaction markers leave, with the adjusted
`Consumer._add_gap` (reflexe_common.streams) and faust's own `Consumer._new_offset`; and the
batches a stream's agent is given."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from faust.transport.consumer import Consumer
from faust.types import TP
import pytest
from intervaltree import IntervalTree

from reflexe_common.streams import pending_batches  # importing it adjusts Consumer._add_gap

PARTITION = TP("referral.events", 3)


class _Offsets:
    """The state of faust's Consumer that `_add_gap` and `_new_offset` read and write."""

    def __init__(self, committed: int | None = None) -> None:
        self._committed_offset = defaultdict(lambda: committed)
        self._gap = defaultdict(IntervalTree)
        self._acked = defaultdict(list)
        self._acked_index = defaultdict(set)

    async def read_and_ack(self, offsets: list[int]) -> None:
        """As faust's `_drain_messages` then an acknowledgement: each message after a gap records it."""
        previous = None
        for offset in offsets:
            if previous is not None and offset - previous > 1:
                await Consumer._add_gap(self, PARTITION, previous + 1, offset)
            previous = offset
            self._acked[PARTITION].append(offset)
            self._acked_index[PARTITION].add(offset)


async def test_the_commit_moves_past_every_marker_to_after_the_last_message():
    offsets = _Offsets()
    await offsets.read_and_ack([10, 12, 14, 15, 17])  # markers at 11, 13 and 16
    assert Consumer._new_offset(offsets, PARTITION) == 18
    assert not offsets._gap[PARTITION]  # the gaps behind the commit are dropped


async def test_a_message_not_yet_acknowledged_holds_the_commit_back():
    offsets = _Offsets()
    await offsets.read_and_ack([10, 12, 14])
    offsets._acked[PARTITION].remove(12)  # 12 is still being handled
    assert Consumer._new_offset(offsets, PARTITION) == 12  # 10 and the marker 11, not 12


async def test_many_gaps_are_kept_apart_and_all_committed_over():
    offsets = _Offsets()
    await offsets.read_and_ack(list(range(0, 2000, 2)))  # a marker after every message
    assert len(offsets._gap[PARTITION]) == 999
    assert Consumer._new_offset(offsets, PARTITION) == 1999


async def test_a_gap_behind_the_committed_offset_is_not_recorded():
    offsets = _Offsets(committed=20)
    await Consumer._add_gap(offsets, PARTITION, 15, 19)
    await Consumer._add_gap(offsets, PARTITION, 18, 23)
    assert sorted((i.begin, i.end) for i in offsets._gap[PARTITION]) == [(21, 23)]


class _FakeStream:
    """What `pending_batches` uses of a faust stream: manual acks, the channel's queue, events."""

    def __init__(self, arrivals: list[list[str]]) -> None:
        self._arrivals = arrivals  # events arriving together, group after group
        self.channel = self
        self.queue = asyncio.Queue()
        self.acked: list[str] = []

    def noack(self) -> _FakeStream:
        return self

    async def events(self):
        for group in self._arrivals:
            for event in group:
                self.queue.put_nowait(event)
            while not self.queue.empty():
                yield self.queue.get_nowait()

    async def ack(self, event: str) -> None:
        self.acked.append(event)


async def test_a_batch_is_what_is_pending_and_is_acknowledged_once_handled():
    stream = _FakeStream([["a"], ["b", "c", "d"], ["e", "f", "g", "h", "i"]])
    batches, acked_before = [], []
    async for batch in pending_batches(stream, max_size=3):
        acked_before.append(list(stream.acked))
        batches.append(batch)
    assert batches == [["a"], ["b", "c", "d"], ["e", "f", "g"], ["h", "i"]]
    assert acked_before == [[], ["a"], ["a", "b", "c", "d"], ["a", "b", "c", "d", "e", "f", "g"]]
    assert stream.acked == list("abcdefghi")


async def test_a_batch_whose_handling_fails_is_not_acknowledged():
    stream = _FakeStream([["a", "b"], ["c"]])
    with pytest.raises(RuntimeError):
        async for batch in pending_batches(stream, max_size=10):
            if batch == ["c"]:
                raise RuntimeError("handler failed")
    assert stream.acked == ["a", "b"]  # c's offset is not committed: it comes again
