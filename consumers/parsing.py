"""The consumer's parse process: batch N+1 is parsed, validated and shaped for COPY in a worker
process while batch N is written.

In a thread, the parse (CPU-bound validation) and the writer would share one interpreter lock:
the writer would wait for the lock after every database round trip and the two would never run
on two cores at once. A process has its own interpreter; it sends back the staging rows as
COPY-ready bytes (cheap to pickle, nothing left for the writer to format).

The worker ignores SIGTERM/SIGINT (a stop signal to the whole process group must not break the
pool while the consumer drains its last batch) and exits when its parent is gone (kill -9 of
the consumer leaves no orphan). If the worker dies anyway, the batch is parsed in-process and
a new worker is started.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from consumers.apply import DeadLetterRow, Prepared, Record, prepare, prepare_wire, wire

log = logging.getLogger(__name__)


def _watch_parent() -> None:
    # The parent's sentinel (as the agent's sender child uses it) becomes ready the moment the
    # consumer is gone, however it died; no polling.
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
    os._exit(0)


def _worker_init() -> None:
    # A batch allocates ~20 objects per event (models, tuples) and frees them by reference
    # count; at the default threshold (700) the cyclic collector would run hundreds of times a
    # batch for nothing. Collections still run, a hundred times rarer, and
    # the imported modules are frozen out of them.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, daemon=True, name="parent-watch").start()


class Parsed:
    """A batch being parsed; :meth:`result` waits for it."""

    def __init__(self, owner: ParsePool, records: list[Record], fut: Future[Prepared] | None,
                 refused: list[DeadLetterRow] | None = None) -> None:
        self.owner = owner
        self.records = records
        self.fut = fut
        # Records refused before parsing (consumer.screen): dead letters of this batch, and
        # their offsets commit with it.
        self.refused = refused or []

    def result(self) -> Prepared:
        prepared = None
        if self.fut is not None:
            try:
                prepared = self.fut.result()
                prepared.records = self.records
            except BrokenProcessPool:
                log.warning("parse process died; parsing this batch in-process",
                            extra={"records": len(self.records)})
                self.owner.restart()
        if prepared is None:
            prepared = prepare(self.records)
        res = prepared.result
        for d in self.refused:
            res.dead_letters.append(d)
            key = (d.topic or "", d.partition if d.partition is not None else -1)
            res.offsets[key] = max(res.offsets.get(key, -1), (d.offset or 0) + 1)
        return prepared

    def cancel(self) -> None:
        if self.fut is not None:
            self.fut.cancel()


class ParsePool:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init)
        pool.submit(prepare_wire, [])  # start the worker (imports) before the first batch
        return pool

    def restart(self) -> None:
        old, self._pool = self._pool, None
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)

    def submit(self, records: list[Record], refused: list[DeadLetterRow] | None = None
               ) -> Parsed:
        if self._pool is None:
            self._pool = self._start()
        try:
            return Parsed(self, records, self._pool.submit(prepare_wire, wire(records)),
                          refused)
        except (BrokenProcessPool, RuntimeError):
            self.restart()
            return Parsed(self, records, None, refused)

    def warm(self) -> None:
        """Start the worker and wait until it can parse (start-up is not a batch's cost)."""
        self.submit([]).result()

    def shutdown(self) -> None:
        old, self._pool = self._pool, None
        if old is not None:
            old.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ParsePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
