"""The site agent's event loop: watch, wait for stable files, check and hash, record in the outbox.

One thread owns the loop and the outbox writes. watchdog threads only enqueue paths; a thread pool
checks and hashes pages (hashlib and file reads release the GIL); a sender child process
(producers/sender.py) drains the outbox. Every detection is written to SQLite before anything
is produced, and a periodic reconcile walk catches whatever the inotify events missed (queue
overflow, network shares).
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import queue
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producers.layout import Layout, NameMismatch, nfc
from producers.metrics import AgentMetrics
from producers.outbox import ENQUEUE_SQL, Known, Outbox, enqueue
from producers.pagecheck import Changed, PageFacts, Rejected, inspect_settled
from producers.wire import WireEvent, page_scanned
from sohoa.config import Settings
from sohoa.disk import disk_full
from sohoa.events import (
    Classification,
    DeadLetter,
    FileClosed,
    FileManifest,
    PageRemoved,
    PageScanned,
    stable_event_id,
)

log = logging.getLogger(__name__)

SCAN_YIELD_EVERY = 256     # a walk hands control back to the loop every this many entries
SCAN_SLICE = 8             # ... and this many times per loop turn, so events keep flowing
MANIFEST_MAX_BYTES = 1 << 20
INBOX_SLICE = 2000         # filesystem events / hash results handled per loop turn
HASH_BATCH = 64            # settled pages per pool task: one future, one wake-up per batch
FOLDER_CACHE = 256         # folders whose page rows the event path keeps in memory


@dataclass(slots=True)
class Candidate:
    root: int
    path: Path
    rel: str              # NFC, '/'-joined
    size: int
    mtime_ns: int
    kind: str             # page | manifest | marker | other
    known: Known | None = None   # the outbox's row when first seen (this thread owns writes)
    name: Any = None             # parsed PageName, once settled


class _OverflowSpy(logging.Handler):
    """watchdog only logs an inotify queue overflow; turn that log line into a reconcile."""

    def __init__(self, flag: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.flag = flag

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.flag.set()


class Agent:
    def __init__(self, settings: Settings, metrics: AgentMetrics) -> None:
        self.settings = settings
        self.cfg = cfg = settings.watcher
        self.metrics = metrics
        self.site = cfg.site_id
        self.layout = Layout(cfg.layout)
        self.roots = [Path(os.path.abspath(r)) for r in cfg.roots]
        self.root_keys = [r.as_posix() for r in self.roots]
        self._root_norm = [os.path.normcase(str(r)) for r in self.roots]
        self.ob = Outbox(cfg.outbox_path)
        self.inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.candidates: dict[str, Candidate] = {}
        self.removals: dict[str, tuple[int, str]] = {}
        self.hashing: dict[str, Future[Any] | None] = {}  # None: settled, batch not yet out
        self._to_hash: list[tuple[str, Candidate]] = []
        self._commits = 0  # bumped at each outbox commit: tells a walk its snapshot is current
        self.busy_dirs: dict[tuple[int, str], int] = {}
        # (due, seq, key) tuples: compared in C, unlike a dataclass's generated __lt__.
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._scans: list[Iterator[None]] = []
        self._writes: list[tuple[str, tuple[Any, ...]]] = []
        self._pending: dict[tuple[str, str], Known] = {}
        self._folders: dict[tuple[str, str], dict[str, tuple[int, int, str]]] = {}
        self.overflow = threading.Event()
        self._disk_full_logged = False
        self.stop_event = threading.Event()
        self.wake_sender: Any = None   # anything with .set(): asks the sender to look now
        self.sender: Any = None        # anything with .is_alive(): the sender child process
        workers = cfg.hash_workers or min(4, os.cpu_count() or 1)
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash")
        self._ignore_names = {n.casefold() for n in cfg.ignore_names}
        self._ignore_prefixes = tuple(cfg.ignore_prefixes)
        self._ignore_suffixes = tuple(s.casefold() for s in cfg.ignore_suffixes)
        self._exts = {e.casefold() for e in cfg.extensions}
        self._observer: Any = None
        self.missing_roots: set[int] = set()

    # --- names ----------------------------------------------------------------------------

    def _litter(self, name: str) -> bool:
        folded = name.casefold()
        return (folded in self._ignore_names or name.startswith(self._ignore_prefixes)
                or folded.endswith(self._ignore_suffixes))

    def _kind(self, name: str) -> str:
        folded = nfc(name).casefold()
        if folded == self.cfg.manifest_name.casefold():
            return "manifest"
        if folded == self.cfg.close_marker.casefold():
            return "marker"
        if os.path.splitext(folded)[1] in self._exts:
            return "page"
        return "other"

    def _rel(self, root: int, path: Path) -> str | None:
        # String work, not PurePath.relative_to: this runs for every event and every new page.
        p, r = os.path.normcase(str(path)), self._root_norm[root]
        if p == r:
            return "."
        prefix = r if r.endswith(os.sep) else r + os.sep
        if not p.startswith(prefix):
            return None
        rel = str(path)[len(prefix):]
        return nfc(rel.replace(os.sep, "/") if os.sep != "/" else rel)

    def _root_of(self, path: Path) -> int | None:
        p = os.path.normcase(str(path))
        for i, r in enumerate(self._root_norm):
            if p == r or p.startswith(r if r.endswith(os.sep) else r + os.sep):
                return i
        return None

    # --- watching ---------------------------------------------------------------------------

    def start_watching(self) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        inbox = self.inbox
        litter = self._litter

        def put(kind: str, raw: bytes | str, is_dir: bool) -> None:
            path = os.fsdecode(raw)
            # Temp names of write-then-rename make half the events of a burst: drop them here.
            if is_dir or not litter(os.path.basename(path)):
                inbox.put((kind, (path, is_dir)))

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                kind = event.event_type
                if kind in ("opened", "closed_no_write"):
                    return
                if kind == "moved":
                    put("gone", event.src_path, event.is_directory)
                    put("seen", event.dest_path, event.is_directory)
                elif kind == "deleted":
                    put("gone", event.src_path, event.is_directory)
                else:
                    put("seen", event.src_path, event.is_directory)

        spy = _OverflowSpy(self.overflow)
        for name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
            logging.getLogger(name).addHandler(spy)
        if self.cfg.polling:
            self._observer = PollingObserver(timeout=self.cfg.poll_interval_s)
        else:
            self._observer = Observer()
        handler = Handler()
        wanted = None
        if not self.cfg.polling:
            from watchdog.events import (
                DirCreatedEvent,
                DirDeletedEvent,
                DirMovedEvent,
                FileClosedEvent,
                FileCreatedEvent,
                FileDeletedEvent,
                FileMovedEvent,
            )

            # No IN_MODIFY/IN_ATTRIB/IN_OPEN: a scanner's every write would be an event, and the
            # kernel queue would overflow sooner. Creation, close-after-write and renames say
            # all we need; the stability checks re-stat on their own clock.
            wanted = [FileCreatedEvent, DirCreatedEvent, FileMovedEvent, DirMovedEvent,
                      FileDeletedEvent, DirDeletedEvent, FileClosedEvent]
        for i, root in enumerate(self.roots):
            if i in self.missing_roots:
                continue
            self._observer.schedule(handler, str(root), recursive=True, event_filter=wanted)
        self._observer.daemon = True
        self._observer.start()
        log.info("watching", extra={"roots": self.root_keys, "polling": self.cfg.polling})

    def stop_watching(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=10)
            self._observer = None

    # --- the loop ---------------------------------------------------------------------------

    def check_roots(self) -> None:
        for i, r in enumerate(self.roots):
            if r.is_dir():
                if i in self.missing_roots:
                    log.info("root is back", extra={"root": str(r)})
                    self.missing_roots.discard(i)
                    if self._observer is not None:
                        self.stop_watching()
                        self.start_watching()
            elif i not in self.missing_roots:
                log.error("root is missing or not a folder; retrying at each reconcile",
                          extra={"root": str(r)})
                self.missing_roots.add(i)

    def reconcile(self) -> None:
        self.check_roots()
        for i in range(len(self.roots)):
            if i not in self.missing_roots:
                self._scans.append(self._scan_root(i))

    def idle(self) -> bool:
        return not (self.candidates or self.hashing or self.removals or self._scans
                    or self._writes or self._to_hash)

    def run(self, once: bool = False) -> None:
        """Loop until :attr:`stop_event` (or, with ``once``, until everything seen is recorded)."""
        # The loop thread gives up the GIL at every stat and SQLite call; with hashing threads
        # busy it would wait up to the default 5 ms to get it back each time.
        sys.setswitchinterval(0.0005)
        self.check_roots()
        if not once:
            self.start_watching()
        self.reconcile()
        next_reconcile = time.monotonic() + self.cfg.reconcile_interval_s
        idle_every = min(60.0, max(1.0, self.cfg.idle_timeout_s / 4))
        next_idle_check = time.monotonic() + idle_every
        try:
            while not self.stop_event.is_set():
                self._drain_inbox()
                self._pump_scans()
                self._process_due()
                self._submit_hashes()
                self._flush_writes()
                now = time.monotonic()
                if self.overflow.is_set():
                    self.overflow.clear()
                    log.warning("inotify events were lost; reconciling the roots now")
                    self.reconcile()
                if now >= next_reconcile:
                    self.reconcile()
                    next_reconcile = now + self.cfg.reconcile_interval_s
                if now >= next_idle_check:
                    self._close_idle_files()
                    next_idle_check = now + idle_every
                if once and self.idle():
                    self._close_idle_files()  # cron-style runs close idle files too
                    self._flush_writes()
                    break
                if self.sender is not None and not self.sender.is_alive():
                    raise RuntimeError("the outbox sender process died")
                self._wait()
        finally:
            self.stop_watching()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self._drain_results_only()
            self._flush_writes()

    def close(self) -> None:
        self.ob.close()

    def _wait(self) -> None:
        if self._scans or self._writes or self._to_hash:
            return
        timeout = 0.5
        if self._heap:
            timeout = max(0.0, min(timeout, self._heap[0][0] - time.monotonic()))
        if timeout <= 0:
            return
        try:
            item = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self._handle(item)

    def _drain_inbox(self) -> None:
        # Bounded, so writes are committed and due checks run while a flood is coming in.
        for _ in range(INBOX_SLICE):
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    def _drain_results_only(self) -> None:
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return
            if item[0] == "hashed":
                self._handle(item)

    def _handle(self, item: tuple[str, Any]) -> None:
        kind, payload = item
        if kind == "hashed":
            batch, fut = payload
            try:
                results = fut.result()
            except BaseException as exc:  # cancelled at shutdown, or a bug in the batch itself
                results = [exc] * len(batch)
            for (key, c), result in zip(batch, results, strict=True):
                self._on_hashed(key, c, result)
            return
        path_s, is_dir = payload
        path = Path(path_s)
        root = self._root_of(path)
        if root is None or path == self.roots[root]:
            return
        if kind == "gone":
            if is_dir:
                rel = self._rel(root, path)
                if rel is not None:
                    self._schedule_removals_under(root, rel)
            else:
                self._schedule_removal(root, path)
        elif is_dir:
            if not path.is_symlink():
                self._scans.append(self._scan_dir(root, path))
        else:
            self.observe(root, path)

    # --- observation and stability --------------------------------------------------------

    def observe(self, root: int, path: Path, st: os.stat_result | None = None,
                rel: str | None = None, unknown: bool = False) -> None:
        """A path may have appeared or changed: start (or keep) waiting for it to be stable.

        A walk passes the ``rel`` it computed and ``unknown`` when its folder snapshot, taken
        with no commit since, has no row for the path: then the outbox needs no lookup.
        """
        name = path.name
        if self._litter(name):
            return
        if rel is None:
            rel = self._rel(root, path)
            if rel is None:
                return
        key = f"{root}\x00{rel}"
        if key in self.hashing or key in self.candidates:
            # Being read right now (the result re-checks size and mtime), or already waiting
            # (its due check re-stats): a burst of events for one file costs nothing more.
            return
        if st is None:
            try:
                st = path.lstat()
            except FileNotFoundError:
                self._schedule_removal(root, path)
                return
            except OSError as exc:
                self._reject_once(root, path, rel, 0, 0, "unreadable", f"cannot stat: {exc}")
                return
        if stat.S_ISDIR(st.st_mode):
            return
        # Looked up afresh: a walk's view of its folder may be older than our last commits.
        rootk = self.root_keys[root]
        known = self._pending_page(rootk, rel)
        if known is None and not unknown:
            # Events come folder by folder: one query per folder, then most answers from memory.
            folder = self._folder_rows(rootk, rel.rpartition("/")[0])
            k = folder.get(rel)
            if k is None:
                unknown = True
            elif k[0] == st.st_size and k[1] == st.st_mtime_ns and k[2] != "removed":
                return  # unchanged since we last dealt with it
        if known is None and not unknown:
            known = self.ob.known(rootk, rel)
        if _unchanged(known, st):
            return  # unchanged since we last dealt with it
        self.removals.pop(key, None)
        if stat.S_ISLNK(st.st_mode):
            self._reject_once(root, path, rel, st.st_size, st.st_mtime_ns, "symlink",
                              "symbolic link: never followed (it may point outside the root)")
            return
        if not stat.S_ISREG(st.st_mode):
            return  # sockets, fifos, devices: not scanner output
        self.candidates[key] = Candidate(root, path, rel, st.st_size, st.st_mtime_ns,
                                         self._kind(name),
                                         known)
        self._busy(root, rel, +1)
        self._push(time.monotonic() + self.cfg.stability_window_s, key)

    def _folder_rows(self, rootk: str, rel_dir: str) -> dict[str, tuple[int, int, str]]:
        """A folder's page rows, cached. This thread is the only writer of ``pages`` (one agent
        per outbox) and every commit updates the cached folders, so the cache stays exact."""
        rows = self._folders.get((rootk, rel_dir))
        if rows is None:
            if len(self._folders) >= FOLDER_CACHE:
                self._folders.pop(next(iter(self._folders)))
            rows = self._folders[(rootk, rel_dir)] = self.ob.known_in_dir(rootk, rel_dir)
        return rows

    def _busy(self, root: int, rel: str, delta: int) -> None:
        d = (root, rel.rpartition("/")[0])
        n = self.busy_dirs.get(d, 0) + delta
        if n <= 0:
            self.busy_dirs.pop(d, None)
        else:
            self.busy_dirs[d] = n

    def _push(self, due: float, key: str) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), key))

    def _process_due(self) -> None:
        now = time.monotonic()
        while self._heap and self._heap[0][0] <= now:
            key = heapq.heappop(self._heap)[2]
            if key in self.candidates:
                self._check_candidate(key, now)
            elif key in self.removals:
                self._check_removal(key)

    def _check_candidate(self, key: str, now: float) -> None:
        c = self.candidates[key]
        if c.kind == "page":
            # The window's closing stat is the worker's first step (inspect_settled): a page
            # that moved meanwhile comes back as Changed and waits a new window from there.
            del self.candidates[key]
            self._busy(c.root, c.rel, -1)
            self._settled(key, c)
            return
        try:
            st = c.path.lstat()
        except FileNotFoundError:
            # Renamed away or deleted before it settled (write-to-temp-then-rename).
            del self.candidates[key]
            self._busy(c.root, c.rel, -1)
            self._schedule_removal(c.root, c.path)
            return
        except OSError as exc:
            del self.candidates[key]
            self._busy(c.root, c.rel, -1)
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "unreadable",
                              f"cannot stat: {exc}")
            return
        if st.st_size != c.size or st.st_mtime_ns != c.mtime_ns or not stat.S_ISREG(st.st_mode):
            c.size, c.mtime_ns = st.st_size, st.st_mtime_ns
            if not stat.S_ISREG(st.st_mode):
                del self.candidates[key]
                self._busy(c.root, c.rel, -1)
                self.observe(c.root, c.path)
                return
            self._push(now + self.cfg.stability_window_s, key)
            return
        # Stable for the whole window.
        if c.kind == "marker" and self.busy_dirs.get((c.root, c.rel.rpartition("/")[0]), 0) > 1:
            self._push(now + self.cfg.stability_window_s, key)  # close after its pages
            return
        del self.candidates[key]
        self._busy(c.root, c.rel, -1)
        self._settled(key, c)

    def _settled(self, key: str, c: Candidate) -> None:
        parts = tuple(c.rel.split("/"))
        if c.kind == "manifest":
            self._on_manifest(c, parts)
        elif c.kind == "marker":
            self._on_marker(c, parts)
        elif c.kind == "page":
            try:
                c.name = self.layout.parse(parts)
            except NameMismatch as exc:
                self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, exc.reason, str(exc))
                return
            self.hashing[key] = None
            self._busy(c.root, c.rel, +1)
            self._to_hash.append((key, c))
        else:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "not_image",
                              f"not a page: extension not in {sorted(self._exts)}")

    # --- results ----------------------------------------------------------------------------

    def _submit_hashes(self) -> None:
        if not self._to_hash:
            return
        todo, self._to_hash = self._to_hash, []
        # Big enough to cut per-task overhead, small enough to keep every worker busy.
        size = max(1, min(HASH_BATCH, -(-len(todo) // self.workers)))
        for i in range(0, len(todo), size):
            batch = todo[i:i + size]
            fut = self.pool.submit(inspect_settled, [(c.path, c.size, c.mtime_ns)
                                                     for _, c in batch],
                                   self.cfg.max_file_bytes)
            for key, _ in batch:
                self.hashing[key] = fut
            fut.add_done_callback(lambda f, b=batch: self.inbox.put(("hashed", (b, f))))

    def _on_hashed(self, key: str, c: Candidate, result: PageFacts | BaseException) -> None:
        self.hashing.pop(key, None)
        self._busy(c.root, c.rel, -1)
        if isinstance(result, Changed):
            self.observe(c.root, c.path)
            return
        if isinstance(result, Rejected):
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, result.reason,
                              result.detail)
            return
        if isinstance(result, BaseException):
            if isinstance(result, CancelledError) or not isinstance(result, Exception):
                return  # cancelled at shutdown: nothing recorded, the next run sees it again
            # A bug or an odd file: report it, never stop the agent.
            log.error("page check failed", exc_info=result, extra={"path": str(c.path)})
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "corrupt",
                              f"check failed: {type(result).__name__}: {result}")
            return
        facts = result
        name = c.name
        rootk = self.root_keys[c.root]
        known = self._pending_page(rootk, c.rel) or c.known
        if isinstance(known, Known) and known.sha256 == facts.sha256 and \
                known.state in ("sent", "rejected") and known.revision >= 1:
            # Touched or copied over with the same bytes: nothing new to count.
            self._write_page(rootk, c, name, facts, known.revision, "sent", None)
            return
        revision = (known.revision + 1) if isinstance(known, Known) and known.revision else 1
        # Bytes equal to PageScanned.make(...).to_json() (tests/test_watch_units.py), without
        # validating again what the layout and the page check already bounded.
        ev = page_scanned(
            site_id=self.site, fonds=name.fonds, file_code=name.file_code, page_no=name.page_no,
            uri=c.path.as_uri(), sha256=facts.sha256, size_bytes=facts.size,
            media_type=facts.media_type, revision=revision, path=c.rel,
        )
        self._write_page(rootk, c, name, facts, revision, "sent", ev)
        self.metrics.detected.inc()
        self.metrics.last_page.set(time.time())
        if revision > 1:
            log.info("page changed: new revision", extra={"path": str(c.path),
                                                          "revision": revision})

    def _pending_page(self, rootk: str, rel: str) -> Known | None:
        """A page row written in this turn but not yet committed."""
        return self._pending.get((rootk, rel))

    def _queue_page_row(self, args: tuple[Any, ...]) -> None:
        self._writes.append(("page", args))
        prior = self._pending.get((args[0], args[1]))
        sha = args[5] if args[5] is not None else (prior.sha256 if prior else None)
        self._pending[(args[0], args[1])] = Known(args[1], args[3], args[4], sha, args[6],
                                                  args[10], args[7], args[8], args[9])

    def _write_page(self, rootk: str, c: Candidate, name: Any, facts: PageFacts, revision: int,
                    state: str, ev: PageScanned | WireEvent | None) -> None:
        self._queue_page_row((
            rootk, c.rel, c.rel.rpartition("/")[0], facts.size, facts.mtime_ns, facts.sha256,
            revision, name.fonds, name.file_code, name.page_no, state, None,
            ev.event_id if ev else None))
        self._writes.append(("file_touch", (rootk, name.file_dir, time.time())))
        if ev is not None:
            self._writes.append(("event", ("site_events", ev)))

    def _flush_writes(self) -> None:
        """Commit the queued writes; while the outbox's disk is full, wait and retry."""
        backoff = 1.0
        while True:
            try:
                self._flush_writes_once()
            except sqlite3.OperationalError as exc:
                if not disk_full(exc) or self.stop_event.is_set():
                    raise
                # Nothing is lost by waiting: the writes stay queued here, the pages stay on
                # disk, and new arrivals wait in the event queue (or the next walk finds them).
                if not self._disk_full_logged:
                    log.error("outbox disk is full; detection paused, retrying until space "
                              "is freed", extra={"outbox": str(self.cfg.outbox_path),
                                                 "error": str(exc)})
                    self._disk_full_logged = True
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            if self._disk_full_logged:
                log.info("outbox disk has space again; detection resumed",
                         extra={"outbox": str(self.cfg.outbox_path)})
                self._disk_full_logged = False
            return

    def _flush_writes_once(self) -> None:
        if not self._writes:
            return
        writes = self._writes
        self._commits += 1
        touched: dict[tuple[str, str], float] = {}
        pages: list[tuple[Any, ...]] = []
        file_sets: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        now = time.time()
        # Grouped by table, each group in its order: one executemany each, one transaction.
        for op, args in writes:
            if op == "page":
                pages.append(args)
            elif op == "file_touch":
                touched[(args[0], args[1])] = args[2]  # once per file per batch
            elif op == "file_set":
                file_sets.append(args)
            elif op == "event":
                kind, ev = args
                events.append((ev.event_id, kind, ev.NAME, ev.key(), ev.to_json(), now))
        with self.ob.transaction() as db:
            db.executemany(
                "INSERT INTO pages (root, path, dir, size, mtime_ns, sha256, revision, "
                "fonds, file_code, page_no, state, reason, event_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (root, path) DO UPDATE "
                "SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                "sha256=coalesce(excluded.sha256, pages.sha256), "
                "revision=excluded.revision, fonds=coalesce(excluded.fonds, pages.fonds), "
                "file_code=coalesce(excluded.file_code, pages.file_code), "
                "page_no=coalesce(excluded.page_no, pages.page_no), "
                "state=excluded.state, reason=excluded.reason, "
                "event_id=coalesce(excluded.event_id, pages.event_id)", pages)
            for rootk, file_dir, column, value in file_sets:
                db.execute(
                    f"INSERT INTO files (root, file_dir, {column}) VALUES (?,?,?) "
                    f"ON CONFLICT (root, file_dir) DO UPDATE SET {column}=excluded.{column}",
                    (rootk, file_dir, value))
            db.executemany(ENQUEUE_SQL, events)
            db.executemany(
                "INSERT INTO files (root, file_dir, last_page) VALUES (?,?,?) "
                "ON CONFLICT (root, file_dir) DO UPDATE SET last_page=excluded.last_page",
                ((r, d, t) for (r, d), t in touched.items()))
        for r in pages:  # keep the cached folders exact
            rows = self._folders.get((r[0], r[2]))
            if rows is not None:
                rows[r[1]] = (r[3], r[4], r[10])
        # Only once committed: a failed commit (disk full) keeps them queued for the retry.
        self._writes = []
        self._pending = {}
        if self.wake_sender is not None:
            self.wake_sender.set()

    # --- rejections -------------------------------------------------------------------------

    def _reject_once(self, root: int, path: Path, rel: str, size: int, mtime_ns: int,
                     reason: str, detail: str) -> None:
        rootk = self.root_keys[root]
        known = self._pending_page(rootk, rel) or self.ob.known(rootk, rel)
        if known is not None and known.state == "rejected" and known.size == size and \
                known.mtime_ns == mtime_ns:
            return
        log.warning("file rejected", extra={"path": str(path), "reason": reason,
                                            "detail": detail})
        self.metrics.rejected(reason)
        # The row keeps the last sent sha and revision, so a fixed file is a new revision.
        self._queue_page_row((
            rootk, rel, rel.rpartition("/")[0], size, mtime_ns, None,
            known.revision if known else 0, None, None, None, "rejected", reason, None))
        dl = DeadLetter(
            event_id=stable_event_id("DeadLetter", self.site, rootk, rel, size, mtime_ns, reason),
            site_id=self.site, source="watcher", reason=f"{reason}: {detail}",
            payload=json.dumps({"path": rel, "uri": path.as_uri(), "size_bytes": size},
                               ensure_ascii=False),
        )
        self._writes.append(("event", ("dead_letters", dl)))

    # --- removals ---------------------------------------------------------------------------

    def _schedule_removal(self, root: int, path: Path) -> None:
        if self._litter(path.name):
            return
        rel = self._rel(root, path)
        if rel is None:
            return
        key = f"{root}\x00{rel}"
        if key in self.candidates:
            return
        if key not in self.removals:
            self.removals[key] = (root, rel)
            # Wait a window: a replace-by-delete-and-create must not look like a removal.
            self._push(time.monotonic() + self.cfg.stability_window_s, key)

    def _schedule_removals_under(self, root: int, rel_dir: str) -> None:
        rows = self.ob.db.execute(
            "SELECT path FROM pages WHERE root = ? AND state = 'sent' AND "
            "(dir = ? OR substr(dir, 1, ?) = ?)",
            (self.root_keys[root], rel_dir, len(rel_dir) + 1, rel_dir + "/"))
        for (rel,) in rows.fetchall():
            self._schedule_removal(root, self.roots[root] / rel)

    def _check_removal(self, key: str) -> None:
        root, rel = self.removals.pop(key)
        path = self.roots[root] / rel
        self._flush_writes()
        rootk = self.root_keys[root]
        known = self.ob.known(rootk, rel)
        if known is None or known.state not in ("sent", "rejected"):
            return  # never counted (a temp name, a page that never settled): nothing to report
        if os.path.lexists(path) or self._exists_any_form(root, rel):
            return
        if known is None or known.state != "sent" or known.sha256 is None \
                or known.file_code is None or known.page_no is None:
            if known is not None and known.state == "rejected":
                self.ob.db.execute("DELETE FROM pages WHERE root = ? AND path = ?", (rootk, rel))
                self._folders.pop((rootk, rel.rpartition("/")[0]), None)
            return
        ev = PageRemoved(
            event_id=stable_event_id("PageRemoved", self.site, known.file_code, known.page_no,
                                     known.sha256, known.revision),
            site_id=self.site, fonds=known.fonds or "", file_code=known.file_code,
            page_no=known.page_no, sha256=known.sha256, path=rel,
        )
        log.info("page removed by the operator", extra={"path": str(path)})
        self._commits += 1
        self._folders.pop((rootk, rel.rpartition("/")[0]), None)
        self.ob.db.execute("BEGIN IMMEDIATE")
        try:
            self.ob.db.execute("UPDATE pages SET state='removed' WHERE root = ? AND path = ?",
                               (rootk, rel))
            enqueue(self.ob.db, "site_events", ev)
            self.ob.db.execute("COMMIT")
        except BaseException:
            self.ob.db.execute("ROLLBACK")
            raise
        if self.wake_sender is not None:
            self.wake_sender.set()

    def _exists_any_form(self, root: int, rel: str) -> bool:
        """The NFC key may name an NFD file on disk: look for any spelling in the folder."""
        parent = (self.roots[root] / rel).parent
        target = rel.rpartition("/")[2]
        try:
            return any(nfc(n) == target for n in os.listdir(parent))
        except OSError:
            return False

    # --- manifests, markers, idle files ---------------------------------------------------

    def _file_of(self, c: Candidate, parts: tuple[str, ...]) -> tuple[str, str, str] | None:
        try:
            fonds, file_code = self.layout.parse_file_dir(parts[:-1])
        except NameMismatch as exc:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, exc.reason, str(exc))
            return None
        return fonds, file_code, "/".join(parts[:-1])

    def _mark_aux(self, c: Candidate, file_code: str, fonds: str) -> None:
        self._queue_page_row((
            self.root_keys[c.root], c.rel, c.rel.rpartition("/")[0], c.size, c.mtime_ns, None,
            0, fonds, file_code, None, "aux", None, None))

    def _on_manifest(self, c: Candidate, parts: tuple[str, ...]) -> None:
        where = self._file_of(c, parts)
        if where is None:
            return
        fonds, file_code, file_dir = where
        try:
            raw = c.path.read_bytes()[:MANIFEST_MAX_BYTES + 1]
        except OSError as exc:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "unreadable", str(exc))
            return
        try:
            ev = manifest_event(raw, self.site, fonds, file_code)
        except ValueError as exc:
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "bad_manifest", str(exc))
            return
        self._mark_aux(c, file_code, fonds)
        self._writes.append(("file_set", (self.root_keys[c.root], file_dir, "manifest",
                                          ev.model_dump_json())))
        self._writes.append(("event", ("site_events", ev)))
        log.info("manifest read", extra={"path": str(c.path), "file_code": file_code})

    def _on_marker(self, c: Candidate, parts: tuple[str, ...]) -> None:
        where = self._file_of(c, parts)
        if where is None:
            return
        fonds, file_code, file_dir = where
        self._mark_aux(c, file_code, fonds)
        self._close_file(c.root, file_dir, fonds, file_code, "marker")

    def _close_file(self, root: int, file_dir: str, fonds: str, file_code: str,
                    reason: str) -> None:
        self._flush_writes()
        rootk = self.root_keys[root]
        row = self.ob.file_row(rootk, file_dir)
        expected = None
        if row and row[1]:
            expected = json.loads(row[1]).get("expected_pages")
        seen = self.ob.pages_in_file(rootk, file_dir)
        ev = FileClosed(
            event_id=stable_event_id("FileClosed", self.site, file_code, reason, seen, expected),
            site_id=self.site, fonds=fonds, file_code=file_code, reason=reason,  # type: ignore[arg-type]
            expected_pages=expected, pages_seen=seen,
        )
        self._writes.append(("file_set", (rootk, file_dir, "closed", 1)))
        self._writes.append(("event", ("site_events", ev)))
        log.info("file closed", extra={"file_code": file_code, "reason": reason,
                                       "pages_seen": seen, "expected_pages": expected})
        self._flush_writes()

    def _close_idle_files(self) -> None:
        cutoff = time.time() - self.cfg.idle_timeout_s
        for rootk, file_dir in self.ob.open_files_idle_since(cutoff):
            if rootk not in self.root_keys:
                continue
            root = self.root_keys.index(rootk)
            if self.busy_dirs.get((root, file_dir)):
                continue
            try:
                fonds, file_code = self.layout.parse_file_dir(tuple(file_dir.split("/")))
            except NameMismatch:
                continue
            self._close_file(root, file_dir, fonds, file_code, "idle")

    # --- walking ----------------------------------------------------------------------------

    def _pump_scans(self) -> None:
        budget = SCAN_SLICE
        while self._scans and budget > 0:
            try:
                next(self._scans[0])
                budget -= 1
            except StopIteration:
                self._scans.pop(0)

    def _scan_root(self, root: int) -> Iterator[None]:
        visited: set[str] = set()
        try:
            empty = not any(True for _ in os.scandir(self.roots[root]))
        except OSError:
            return
        if empty and self.ob.dirs_with_present(self.root_keys[root]):
            # An unmounted share often leaves an empty mount point: that is not the operator
            # deleting every page, so no removal is reported until the pages are seen again.
            log.error("root is empty but pages are known there; not reporting removals "
                      "(share unmounted?)", extra={"root": str(self.roots[root])})
            return
        yield from self._scan_dir(root, self.roots[root], visited)
        # Folders we knew pages in that are gone altogether.
        for d in self.ob.dirs_with_present(self.root_keys[root]):
            if d not in visited:
                yield from self._vanished_in(root, d, set())

    def _scan_dir(self, root: int, top: Path, visited: set[str] | None = None) -> Iterator[None]:
        stack = [top]
        rootk = self.root_keys[root]
        while stack:
            d = stack.pop()
            rel_dir = self._rel(root, d)
            if rel_dir is None:
                continue
            rel_dir = "" if rel_dir == "." else rel_dir
            if visited is not None:
                visited.add(rel_dir)
            known = self.ob.known_in_dir(rootk, rel_dir)
            snapshot = self._commits
            names: set[str] = set()
            try:
                it = os.scandir(d)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot list folder", extra={"path": str(d), "error": str(exc)})
                continue
            n = 0
            with it:
                for entry in it:
                    n += 1
                    if n % SCAN_YIELD_EVERY == 0:
                        yield
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                            continue
                        if self._litter(entry.name):
                            continue
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    rel = f"{rel_dir}/{nfc(entry.name)}" if rel_dir else nfc(entry.name)
                    names.add(rel)
                    k = known.get(rel)
                    if k is not None and k[0] == st.st_size and k[1] == st.st_mtime_ns and \
                            k[2] != "removed":
                        continue  # the common case of every walk: no Path, no lookup
                    self.observe(root, Path(entry.path), st, rel,
                                 unknown=k is None and self._commits == snapshot)
            yield
            for rel, k in known.items():
                if rel not in names and k[2] in ("sent", "rejected"):
                    self._schedule_removal(root, self.roots[root] / rel)

    def _vanished_in(self, root: int, rel_dir: str, _seen: set[str]) -> Iterator[None]:
        for rel, k in self.ob.known_in_dir(self.root_keys[root], rel_dir).items():
            yield
            if k[2] in ("sent", "rejected"):
                self._schedule_removal(root, self.roots[root] / rel)


def _unchanged(known: Known | None, st: os.stat_result) -> bool:
    return known is not None and known.size == st.st_size and \
        known.mtime_ns == st.st_mtime_ns and known.state != "removed"


def manifest_event(raw: bytes, site: str, fonds: str, file_code: str) -> FileManifest:
    """Validate a ``hoso.json``; raise ValueError naming the field at fault."""
    if len(raw) > MANIFEST_MAX_BYTES:
        raise ValueError(f"manifest is larger than {MANIFEST_MAX_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    fields = {k: data[k] for k in ("title", "expected_pages", "classification", "priority",
                                   "start_date", "end_date", "metadata") if k in data}
    metadata = fields.get("metadata", {})
    if isinstance(metadata, dict):
        # TT 02/2019 fields may sit at the top level or under "metadata": both are metadata.
        metadata = dict(metadata)
        for k, v in data.items():
            if k in fields:
                continue
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise ValueError(f"field '{k}': expected text or a number")
            metadata.setdefault(k, v)
        fields["metadata"] = {k: (str(v) if isinstance(v, int | float) and not isinstance(
            v, bool) else v) for k, v in metadata.items()}
    try:
        ev = FileManifest(site_id=site, fonds=fonds, file_code=file_code, **fields)
    except ValidationError as exc:
        e = exc.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ValueError(f"field '{loc}': {e['msg']}") from None
    if ev.classification.is_classified and ev.title is not None:
        # A classified file's title never leaves the site.
        ev = ev.model_copy(update={"title": None})
    sha = stable_event_id("FileManifest", site, file_code,
                          ev.model_dump_json(exclude={"event_id", "occurred_at"}))
    return ev.model_copy(update={"event_id": sha})


__all__ = ["Agent", "Classification", "manifest_event"]
