"""Reads and hashes the documents to upload ahead of the upload, in a thread of its own.

The uploader sends part n while this reads and hashes part n+1 (file reads and hashlib on large
buffers release the interpreter lock), and asks the store about the next document (its HEAD)
and reads its first part while the current document's last part is on the wire. One thread
serves every document of an uploader, in the order they were started, so a document's reading
begins only once the one before it is read whole.

Each part is read into a buffer of its own that is never written again: the bytes hashed are
the bytes sent. The parts read and not yet sent are bounded by one semaphore shared by every
reader of an uploader (``ahead`` parts, hence at most that many buffers of the part size).
"""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

J = TypeVar("J")

_POLL_S = 0.05  # how often a reader waiting for a free buffer looks whether it was cancelled


class ReadAhead:
    """The reader thread and the buffer budget of one uploader."""

    def __init__(self, ahead: int = 2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-read")
        self._slots = threading.Semaphore(ahead)

    def start(self, job: J, f: io.FileIO | Exception, part_size: int,
              head: Callable[[], bool]) -> DocumentReader[J]:
        """Queue the reading of ``f`` (which the reader then owns and closes): first ``head()``
        (is the document already stored?), then, unless it is, its parts of ``part_size``.
        ``f`` may be why the document could not be opened: :meth:`DocumentReader.stored`
        raises it unless the store holds the bytes already."""
        reader = DocumentReader(job, f, part_size, self._slots, head)
        reader.future = self._pool.submit(reader.run)
        return reader

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DocumentReader(Generic[J]):
    """One document's HEAD answer and parts, as the reader thread produces them."""

    def __init__(self, job: J, f: io.FileIO | Exception, part_size: int,
                 slots: threading.Semaphore,
                 head: Callable[[], bool]) -> None:
        self.job = job
        self.sha256: str | None = None  # the whole document's, once every part was read
        self.future: Future[None] | None = None
        self._f = f
        self._part_size = part_size
        self._slots = slots
        self._head = head
        self._out: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._held = 0  # slots taken for parts not yet given back
        self._closed = False

    # --- the reader thread ---------------------------------------------------------------
    def run(self) -> None:
        try:
            stored = self._head()
            self._out.put(("head", stored))
            if stored or isinstance(self._f, Exception):
                return
            f = self._f
            whole = hashlib.sha256()
            number = 0
            while self._take():
                buf = bytearray(self._part_size)  # never reused: it may still be on the wire
                view = memoryview(buf)
                try:
                    n = _read_into(f, view)
                except BaseException:
                    self._give(1)
                    raise
                if n == 0:
                    self._give(1)
                    self._out.put(("end", whole.hexdigest()))
                    return
                number += 1
                data = view[:n]
                whole.update(data)
                self._out.put(("part", number, data, hashlib.sha256(data).digest()))
        except BaseException as exc:  # handed to the uploader, which decides
            self._out.put(("error", exc))

    def _take(self) -> bool:
        while not self._cancel.is_set():
            if self._slots.acquire(timeout=_POLL_S):
                with self._lock:
                    self._held += 1
                return True
        return False

    def _give(self, n: int) -> None:
        with self._lock:
            n = min(n, self._held)
            self._held -= n
        for _ in range(n):
            self._slots.release()

    # --- the uploader's side ---------------------------------------------------------------
    def stored(self) -> bool:
        """The HEAD's answer: True when the store already holds these bytes (raises what the
        HEAD raised, or else why the document could not be opened)."""
        kind, *rest = self._out.get()
        if kind == "error":
            raise rest[0]
        assert kind == "head", kind
        if not rest[0] and isinstance(self._f, Exception):
            raise self._f
        return bool(rest[0])

    def parts(self) -> Iterator[tuple[int, memoryview, bytes]]:
        """(number, bytes, SHA-256) of each part in order; a part's buffer counts against the
        budget until the next one is asked for. Then :attr:`sha256` is the whole file's."""
        while True:
            kind, *rest = self._out.get()
            if kind == "error":
                raise rest[0]
            if kind == "end":
                self.sha256 = rest[0]
                return
            yield rest[0], rest[1], rest[2]
            self._give(1)

    def close(self) -> None:
        """Stop reading (if it still is), give back the buffers, close the file."""
        if self._closed:
            return
        self._closed = True
        self._cancel.set()
        if self.future is not None and not self.future.cancel():
            self.future.result()  # run() hands its own errors over the queue
        with self._lock:
            held = self._held
        self._give(held)
        if not isinstance(self._f, Exception):
            self._f.close()


def _read_into(f: io.FileIO, view: memoryview) -> int:
    got = 0
    while got < len(view):
        n = f.readinto(view[got:])
        if not n:
            break
        got += n
    return got
