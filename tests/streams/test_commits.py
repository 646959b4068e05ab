"""The Faust apps' offset commits never pass a record still being processed (streams/commits.py).

An agent with two actors acks out of order: the record of the file one actor is still
OCRing stays unacked while the other acks the records after it. The consumer the apps really
use (taken from the app ``make_app`` builds) must hold the commit at that record, whether a
partition has a committed offset or not. No broker needed: the decision is the consumer's.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from typing import Any

import pytest
from faust.types import TP
from faust.types.tuples import Message
from intervaltree import IntervalTree

from sohoa.config import Settings
from streams.faustapp import make_app

TOPIC = "sohoa.file-events"
P = TP(TOPIC, 8)


@pytest.fixture(scope="module")
def consumer_class(tmp_path_factory: pytest.TempPathFactory) -> type:
    app = make_app(Settings(streams={"data_dir": tmp_path_factory.mktemp("faust")}),
                   "commits-test", 6099, 12)
    return app.transport.Consumer


def _consumer(cls: type, committed: int | None) -> object:
    # Only the bookkeeping _new_offset reads; no client, no broker.
    c: Any = object.__new__(cls)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._gap = defaultdict(IntervalTree)
    c._committed_offset = defaultdict(lambda: None)
    c._unacked_messages = weakref.WeakSet()
    if committed is not None:
        c._committed_offset[P] = committed
    return c


def _deliver(c: object, offsets: range) -> list[Message]:
    msgs = [Message(TOPIC, P.partition, o, 0.0, 0, None, b"k", b"v", None, tp=P)
            for o in offsets]
    for m in msgs:
        c._unacked_messages.add(m)  # type: ignore[attr-defined]
    return msgs


def _ack(c: object, m: Message) -> None:
    m.acked = True
    c._unacked_messages.discard(m)  # type: ignore[attr-defined]
    c._acked_index[P].add(m.offset)  # type: ignore[attr-defined]
    c._acked[P].append(m.offset)  # type: ignore[attr-defined]


@pytest.mark.parametrize("committed", [None, 0])
def test_no_commit_past_the_first_record_of_a_fresh_partition(consumer_class, committed) -> None:
    """Offset 0 (a FileAssembled in OCR) unacked, 1–3 (its PageChecked) acked by the other
    actor: nothing may be committed; once 0 is acked, everything up to 4."""
    c = _consumer(consumer_class, committed)
    msgs = _deliver(c, range(4))
    for m in msgs[1:]:
        _ack(c, m)
    assert c._new_offset(P) is None  # type: ignore[attr-defined]
    _ack(c, msgs[0])
    assert c._new_offset(P) == 4  # type: ignore[attr-defined]


def test_no_commit_past_a_one_record_gap_after_the_committed_offset(consumer_class) -> None:
    """Committed 31 (the next to read); 31 in flight, 32–34 acked."""
    c = _consumer(consumer_class, 31)
    msgs = _deliver(c, range(31, 35))
    for m in msgs[1:]:
        _ack(c, m)
    assert c._new_offset(P) is None  # type: ignore[attr-defined]


def test_commits_up_to_the_record_in_flight(consumer_class) -> None:
    """10–12 acked, 13 in flight, 14–15 acked: the commit stops at 13."""
    c = _consumer(consumer_class, 10)
    msgs = _deliver(c, range(10, 16))
    for m in msgs:
        if m.offset != 13:
            _ack(c, m)
    assert c._new_offset(P) == 13  # type: ignore[attr-defined]
    c._committed_offset[P] = 13  # type: ignore[attr-defined]  # what commit() records
    _ack(c, msgs[3])
    assert c._new_offset(P) == 16  # type: ignore[attr-defined]


def test_a_record_of_a_revoked_generation_is_not_counted(tmp_path) -> None:
    """Records fetched in generation 3, acked by an agent after the revoke of generation 3:
    they were not folded (the partition may be another worker's now, and faust reads them
    again from the committed offset), so no commit may pass them; a record of generation 4
    is not stale."""
    app = make_app(Settings(streams={"data_dir": tmp_path}), "commits-stale", 6098, 12)
    c: Any = _consumer(app.transport.Consumer, 20)
    c.app = app
    app.consumer_generation_id = 3
    old = _deliver(c, range(20, 23))
    for m in old:
        m.generation_id = 3
    app.revoked_generation = 3  # what the revoke callback records, first thing
    app.consumer_generation_id = 4
    assert all(app.is_stale(m) for m in old)
    for m in old:
        assert c.ack(m) is False
    assert c._acked[P] == [] and c._new_offset(P) is None
    assert not list(c._unacked_messages)  # done with: no longer holds the commit back
    fresh = _deliver(c, range(20, 21))
    fresh[0].generation_id = 4
    assert not app.is_stale(fresh[0])


def test_a_held_record_holds_the_commit(tmp_path) -> None:
    """The worker stops while the assembly agent processes the batch of 40–42: faust acks
    the batch as it closes the stream, but no commit may pass it (its table writes may be in
    the changelog, its FileAssembled not sent)."""
    app = make_app(Settings(streams={"data_dir": tmp_path}), "commits-hold", 6097, 12)
    c: Any = _consumer(app.transport.Consumer, 40)
    c.app = app
    msgs = _deliver(c, range(40, 44))
    for m in msgs:
        m.generation_id = app.consumer_generation_id = 2
    app.hold(msgs[:3])
    for m in msgs[:3]:
        assert c.ack(m) is False
    _ack(c, msgs[3])  # a record after the batch, done
    assert c._new_offset(P) is None
    assert c._in_flight_head(P) == 40
    app.release(msgs[:3])
    assert not app.is_held(msgs[0])


class _Fetcher:
    """The consumer thread's side of a fetch, as aiokafka's ``Fetcher.fetched_records`` picks
    the partitions to return: records arrive while it waits, and then it returns those of
    the partitions asked for, where an empty collection means every partition."""

    def __init__(self, buffered: dict[TP, list[int]], meanwhile: Any) -> None:
        self.buffered = buffered
        self.meanwhile = meanwhile

    async def getmany(self, active_partitions: Any, timeout: float) -> dict[TP, list[int]]:
        self.meanwhile()  # the main thread's event loop runs while the fetch waits
        return {tp: offsets for tp, offsets in self.buffered.items()
                if not active_partitions or tp in active_partitions}


def test_a_fetch_returns_no_record_of_a_partition_paused_before_it(tmp_path) -> None:
    """Recovery has read a changelog partition and pauses it while a fetch for it waits; the
    source partition is still paused (its records, fetched in the background, wait in the
    fetcher). Faust hands the fetch its live set of active partitions, now empty, which
    aiokafka reads as every partition: the source partition's records came back, faust
    dropped them as not active, and the fetcher's position had moved past them (the hole
    the drain loop then counts as done, issue 24)."""
    app = make_app(Settings(streams={"data_dir": tmp_path}), "commits-fetch", 6096, 12)
    changelog = TP("commits-fetch-files-changelog", 8)
    c: Any = object.__new__(app.transport.Consumer)
    c.app = app
    c._active_partitions = {changelog}
    c._paused_partitions = {P}
    c._thread = _Fetcher({P: [130, 131, 132], changelog: [7]},
                         meanwhile=lambda: c.pause_partitions({changelog}))
    records = asyncio.run(c._getmany(c._get_active_partitions(), 1.0))
    assert records == {changelog: [7]}
    assert not c._active_partitions   # the pause happened while the fetch waited

    c._thread = _Fetcher({P: [130]}, meanwhile=lambda: None)
    assert asyncio.run(c._getmany(set(), 0.01)) == {}  # nothing active: no fetch at all
