"""Offset commits that never pass a record still in flight.

An agent with ``concurrency`` > 1 (the OCR app's, one actor per engine) acks its records out
of order: while one actor OCRs a file, another acks the records after it. faust-streaming
0.15.3 (``Consumer._new_offset``) commits the first run of consecutive acked offsets without
checking that it starts where the committed offset is when no offset has been committed yet,
and lets a head gap of exactly one offset through. The group then commits past the
FileAssembled still in OCR; after a crash no worker ever processes that file again.

The rule here: a partition's offset is never committed past the lowest record that was
handed to a stream and not yet acked. Everything else is faust's own logic.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as _driver
from faust.types import TP
from faust.types.tuples import ack_lock


class Consumer(_driver.Consumer):
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
    """faust.App whose consumer commits by :class:`Consumer`'s rule."""

    def _new_transport(self) -> Any:
        return Transport(self.conf.broker_consumer, self)
