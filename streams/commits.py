"""Offset commits that never pass a record still in flight, and records of a revoked
generation that change nothing.

An agent with ``concurrency`` > 1 (the OCR app's, one actor per engine) acks its records out
of order: while one actor OCRs a file, another acks the records after it. faust-streaming
0.15.3 (``Consumer._new_offset``) commits the first run of consecutive acked offsets without
checking that it starts where the committed offset is when no offset has been committed yet,
and lets a head gap of exactly one offset through. The group then commits past the
FileAssembled still in OCR; after a crash no worker ever processes that file again.

The rule here: a partition's offset is never committed past the lowest record that was
handed to a stream and not yet acked. Everything else is faust's own logic.

A rebalance does not stop an agent: with ``stream_wait_empty`` off, records fetched before
the revoke (in an agent's batch or its ``take_events`` buffer) are still handed to it after
the partition went to another worker. Folded then, they write the partition's changelog
behind the new owner's back: it restored the partition before those records landed, and
whichever worker restores it next (a later rebalance, a restart) reads the old owner's stale
state over the new owner's, and the pages folded in between are gone. So a record fetched in
a generation that has since been revoked (:meth:`App.is_stale`) is not folded (the agents
ask) and its ack is not counted towards a commit: after every rebalance faust seeks each
assigned partition back to its committed offset, so the record is read again, in the new
generation, by whichever worker owns it then. Writes made before the revoke are safe: faust
flushes the producer in the revoke callback, before the worker rejoins, so they are in the
changelog before any new owner reads it.

A worker stopping while pages arrive closes its agents' streams, and faust acks the batch an
agent is still processing (``take_events`` acks its buffer when closed); the consumer then
commits as it stops. A batch whose table writes were done and whose FileAssembled was not
yet sent left that file assembled in the changelog with no FileAssembled, its marker never
read again. The agents :meth:`App.hold` the records they process until they are done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import faust
from faust.transport.drivers import aiokafka as _driver
from faust.types import TP
from faust.types.tuples import ack_lock


class Consumer(_driver.Consumer):
    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        """Records of the partitions active when the fetch begins, and of no other. Faust
        hands the consumer thread its live set of active partitions, and aiokafka's
        ``fetched_records`` reads an empty set as "every partition": when the set empties
        while the fetch waits (recovery pausing the changelog partitions it has read while
        the source partitions are still paused, a revoke pausing everything), the fetch
        drains the buffered records of the paused partitions too and moves their fetch
        positions past them; faust then drops those records as not active. The
        partition's next records then start past a hole, which faust's drain loop counts as
        done (``_add_gap``: it takes a jump in offsets for compacted records), and the next
        commit passes it."""
        if active_partitions is None:
            return await super()._getmany(None, timeout)
        partitions = set(active_partitions)
        if not partitions:
            await asyncio.sleep(timeout)
            return {}
        return await super()._getmany(partitions, timeout)

    def ack(self, message: Any) -> bool:
        app = self.app
        if isinstance(app, App) and app.is_held(message):
            return False  # stays in flight: no commit passes it
        if isinstance(app, App) and app.is_stale(message):
            with ack_lock:  # done with, not processed: read again from the committed offset
                message.acked = True
                self._unacked_messages.discard(message)
            return False
        done: bool = super().ack(message)
        return done

    def _in_flight_head(self, tp: TP) -> int | None:
        """The lowest offset of ``tp`` handed to a stream and not acked yet."""
        with ack_lock:
            offsets = [m.offset for m in list(self._unacked_messages)
                       if m.tp == tp and not m.acked]
        return min(offsets, default=None)

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        head = self._in_flight_head(tp)
        if acked and head is not None and head < min(acked):
            return None  # the run of acked offsets starts after a record still in flight
        new: int | None = super()._new_offset(tp)
        return new


class Transport(_driver.Transport):
    Consumer = Consumer


class App(faust.App):
    """faust.App whose consumer commits by :class:`Consumer`'s rule, and which knows which
    fetched records belong to a revoked generation."""

    #: The last consumer generation whose partitions were revoked: every record fetched in
    #: it or before is stale (faust stamps each record with the generation it was fetched in).
    revoked_generation: int = -1
    #: Records an agent is processing (:meth:`hold`). Held strongly: faust tracks records in
    #: flight in a WeakSet, and a held record must go on holding its partition's commit back.
    _held: set[Any] | None = None

    def hold(self, messages: Iterable[Any]) -> None:
        """The agent starts on these records: until :meth:`release`, an ack of one does not
        count. Faust acks them when it closes the agent's stream as the worker stops, even
        while the agent is still writing their state or sending their FileAssembled, and the
        consumer commits as it stops. Never released (the agent failed or was cancelled),
        they stay in flight: no commit passes them, and the partition's next owner reads
        them again."""
        if self._held is None:
            self._held = set()
        self._held.update(messages)

    def release(self, messages: Iterable[Any]) -> None:
        """The agent is done with these records: their acks count from now on."""
        if self._held is not None:
            self._held.difference_update(messages)

    def is_held(self, message: Any) -> bool:
        return self._held is not None and message in self._held

    def is_stale(self, message: Any) -> bool:
        """The record was fetched before the last revoke: this worker may no longer own its
        partition, and faust reads it again from the committed offset."""
        return bool(message.generation_id <= self.revoked_generation)

    async def _on_partitions_revoked(self, revoked: Any) -> None:
        # On the event loop the agents run on, before anything of the revoke awaits: a batch
        # folded before this point has its changelog records in the producer, which faust
        # flushes below; no batch folded after it holds records of this generation.
        self.revoked_generation = max(self.revoked_generation, self.consumer_generation_id)
        # Held records are of the revoked generation now: stale, their acks do not count
        # either way, and a record an agent never released must not hold a partition this
        # worker gets back (its copy read again after the seek is the one that counts).
        self._held = None
        await super()._on_partitions_revoked(revoked)

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
