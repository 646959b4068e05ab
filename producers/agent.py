"""The site agent's event loop: watch, wait for stable files, check and hash, record in the outbox.

One thread owns the loop and the outbox writes. watchdog threads only enqueue paths; a thread pool
checks and hashes documents (hashlib and file reads release the GIL); a sender child process
(producers/sender.py) drains the outbox. Every detection is written to SQLite before anything
is produced, and a periodic reconcile walk (producers/walks.py) catches whatever the inotify
events missed (queue overflow, network shares). Manifests, closing markers, idle files and
removals are in producers/filing.py; what a document's new bytes change, page by page, in
producers/changes.py.

Paths are kept as spelled on disk (a folder copied from a Mac in NFD and its twin typed on
Windows in NFC are two folders with their own documents); the names in events are NFC, and a
document whose NFC name is already held in its file by another spelling gets ``name|2``.
"""

from __future__ import annotations

import functools
import heapq
import itertools
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
from typing import Any, NamedTuple

from producers.changes import DocumentRead, PageWrite, document_changes
from producers.document_names import DocumentNames
from producers.filing import FilingMixin
from producers.layout import Layout, NameMismatch, PageName
from producers.manifest import manifest_event
from producers.metrics import AgentMetrics
from producers.outbox import ENQUEUE_SQL, UPLOAD_SQL, Known, KnownPage, Outbox
from producers.pagecheck import Changed, PageFacts, Rejected, inspect_settled
from producers.walks import WalksMixin
from sohoa.config import Settings
from sohoa.disk import disk_full
from sohoa.events import Classification
from sohoa.naming import FileNames
from sohoa.objectstore import page_uri

log = logging.getLogger(__name__)

SCAN_SLICE = 8             # a walk's steps per loop turn, so events keep flowing
INBOX_SLICE = 2000         # filesystem events / hash results handled per loop turn
HASH_BATCH = 64            # settled pages per pool task: one future, one wake-up per batch
HASH_BATCH_BYTES = 8 << 20  # ...and no more bytes than this, so a big document is recorded
                            # (and its upload begins) as soon as it is read, not with a batch
FOLDER_CACHE = 256         # folders whose page rows the event path keeps in memory


# Reasons a document may give only because its writer has not finished (a scanner pausing
# longer than the stability window): judged again until the file is older than
# ``watcher.incomplete_grace_s``, so a slow writer leaves no false dead letter.
_MAYBE_UNFINISHED = frozenset({"empty", "corrupt"})


@dataclass(slots=True)
class Candidate:
    root: int
    path: Path
    rel: str              # '/'-joined, as spelled on disk
    size: int
    mtime_ns: int
    kind: str             # page | manifest | marker | other
    known: Known | None = None   # the outbox's row when first seen (this thread owns writes)
    name: PageName | None = None  # parsed, once settled


class DocumentWrite(NamedTuple):
    """A row of the outbox's ``pages`` (one document file) to write (a named tuple: one is
    built per document read)."""

    root: str
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    fonds: str | None
    file_code: str | None
    number: int | None
    state: str
    reason: str | None
    event_id: str | None
    document: str | None
    npages: int | None

    @property
    def dir(self) -> str:
        return self.path.rpartition("/")[0]

    def known(self, prior: Known | None) -> Known:
        return Known(self.path, self.size, self.mtime_ns,
                     self.sha256 if self.sha256 is not None else (prior.sha256 if prior else None),
                     self.state, self.fonds, self.file_code, self.number, self.document,
                     self.npages)


class _OverflowSpy(logging.Handler):
    """watchdog only logs an inotify queue overflow; turn that log line into a reconcile."""

    def __init__(self, flag: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.flag = flag

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.flag.set()


class Agent(WalksMixin, FilingMixin):
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
        self._writes: list[tuple[str, Any]] = []
        self._pending: dict[tuple[str, str], Known] = {}
        self.document_names = DocumentNames(self.ob)
        self._pending_pages: dict[tuple[str, str], dict[int, KnownPage]] = {}
        self._folders: dict[tuple[str, str], dict[str, tuple[int, int, str]]] = {}
        self.overflow = threading.Event()
        self._disk_full_logged = False
        self.stop_event = threading.Event()
        self.wake_sender: Any = None   # anything with .set(): asks the sender to look now
        self.sender: Any = None        # anything with .is_alive(): the sender child process
        workers = cfg.hash_workers or min(4, os.cpu_count() or 1)
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hash")
        self._pdf_reader_asked = False
        self.names = FileNames.of(cfg)
        # With uploads on, a document's events name its object and wait for its upload.
        self.upload_bucket = settings.store.pages_bucket if settings.upload.enabled else None
        self._observer: Any = None
        self.missing_roots: set[int] = set()

    # --- names ----------------------------------------------------------------------------

    def _litter(self, name: str) -> bool:
        return self.names.litter(name)

    def _kind(self, name: str) -> str:
        return self.names.kind(name)

    def _rel(self, root: int, path: Path) -> str | None:
        # String work, not PurePath.relative_to: this runs for every event and every new page.
        p, r = os.path.normcase(str(path)), self._root_norm[root]
        if p == r:
            return "."
        prefix = r if r.endswith(os.sep) else r + os.sep
        if not p.startswith(prefix):
            return None
        rel = str(path)[len(prefix):]
        return rel.replace(os.sep, "/") if os.sep != "/" else rel

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
        if ".pdf" in self.names.extensions and not self._pdf_reader_asked:
            self._pdf_reader_asked = True  # once: a run after another has no pool left
            self.pool.submit(_load_pdf_reader)
        if not once:
            self.start_watching()
        self.reconcile()
        next_reconcile = time.monotonic() + self.cfg.reconcile_interval_s
        idle_every = min(60.0, max(1.0, self.cfg.idle_timeout_s / 4))
        next_idle_check = time.monotonic() + idle_every
        try:
            while not self.stop_event.is_set():
                self._drain_inbox()
                self._pump_scans(SCAN_SLICE)
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
        known = self._pending_doc(rootk, rel)
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
                              f"not a page: extension not in {sorted(self.names.extensions)}")

    # --- results ----------------------------------------------------------------------------

    def _submit_hashes(self) -> None:
        if not self._to_hash:
            return
        todo, self._to_hash = self._to_hash, []
        # Big enough to cut per-task overhead, small enough to keep every worker busy.
        size = max(1, min(HASH_BATCH, -(-len(todo) // self.workers)))
        batch: list[tuple[str, Candidate]] = []
        nbytes = 0
        for i, item in enumerate(todo):
            batch.append(item)
            nbytes += item[1].size
            if len(batch) < size and nbytes < HASH_BATCH_BYTES and i + 1 < len(todo):
                continue
            fut = self.pool.submit(inspect_settled, [(c.path, c.size, c.mtime_ns)
                                                     for _, c in batch],
                                   self.cfg.max_file_bytes)
            for key, _ in batch:
                self.hashing[key] = fut
            fut.add_done_callback(functools.partial(self._hashed, batch))
            batch, nbytes = [], 0

    def _hashed(self, batch: list[tuple[str, Candidate]], fut: Future[Any]) -> None:
        """A hashing batch finished (in a pool thread): the loop takes it from the inbox."""
        self.inbox.put(("hashed", (batch, fut)))

    def _on_hashed(self, key: str, c: Candidate, result: PageFacts | BaseException) -> None:
        self.hashing.pop(key, None)
        self._busy(c.root, c.rel, -1)
        if isinstance(result, Changed):
            self.observe(c.root, c.path)
            return
        if isinstance(result, Rejected):
            if result.reason in _MAYBE_UNFINISHED and \
                    time.time() - c.mtime_ns / 1e9 < self.cfg.incomplete_grace_s:
                # Perhaps still being written (a pause longer than the window): look again
                # after another window instead of reporting a false dead letter.
                self.candidates[key] = c
                self._busy(c.root, c.rel, +1)
                self._push(time.monotonic() + self.cfg.stability_window_s, key)
                return
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, result.reason,
                              result.detail)
            return
        if isinstance(result, BaseException):
            if isinstance(result, CancelledError) or not isinstance(result, Exception):
                return  # cancelled at shutdown: nothing recorded, the next run sees it again
            # A bug or an odd file: report it, never stop the agent.
            log.error("page check failed", exc_info=result, extra={"path": str(c.path)})
            self._reject_once(c.root, c.path, c.rel, c.size, c.mtime_ns, "corrupt",
                              f"check failed: {type(result).__name__}")
            return
        facts = result
        name = c.name
        assert name is not None
        rootk = self.root_keys[c.root]
        known = self._pending_doc(rootk, c.rel) or c.known
        # The row of this path when it names the same file: the page keeps its document.
        same = known if known is not None and known.file_code == name.file_code and \
            known.fonds == name.fonds else None
        kept = same.document if same is not None else None
        if same is not None and kept is not None and same.sha256 == facts.sha256 and \
                same.state in ("sent", "rejected"):
            # Touched or copied over with the same bytes: nothing new to count.
            self._write_document(rootk, c, name, facts, kept, "sent")
            return
        document = kept if kept is not None else self.document_names.name(
            (rootk, c.rel), name.fonds, name.file_code, name.document)
        stored = self._stored_pages(rootk, c.rel) if known is not None else {}
        blob = None
        if self.upload_bucket is not None:
            blob = facts.sha256
            uri = page_uri(self.upload_bucket, self.site, facts.sha256)
        else:
            uri = c.path.as_uri()
        # Bytes equal to PageScanned.make(...).to_json() (tests/producers/test_watch_units.py),
        # without validating again what the layout and the page check already bounded.
        changes = document_changes(self.site, DocumentRead(
            name=name, document=document, path=c.rel, uri=uri,
            sha256=facts.sha256, size=facts.size, media_type=facts.media_type,
            page_sha256=facts.page_sha256 or (facts.sha256,)),
            stored, same.sha256 if same is not None and kept is not None else None)
        self._write_document(rootk, c, name, facts, document, "sent")
        self._write_pages(rootk, c.rel, changes.pages, stored)
        if blob is not None and changes.events:
            self._writes.append(("upload", (blob, rootk, c.rel, facts.size)))
        for ev in changes.events:
            self._writes.append(("event", ("site_events", ev,
                                           blob if ev.NAME == "PageScanned" else None)))
        if changes.new_revisions:
            self.metrics.detected.inc(changes.new_revisions)
            self.metrics.last_page.set(time.time())
        if known is not None and changes.events:
            log.info("document changed", extra={
                "path": str(c.path), "pages": len(facts.page_sha256),
                "new_or_changed_pages": changes.new_revisions, "events": len(changes.events)})

    def _pending_doc(self, rootk: str, rel: str) -> Known | None:
        """A document row written in this turn but not yet committed."""
        return self._pending.get((rootk, rel))

    def _stored_pages(self, rootk: str, rel: str) -> dict[int, KnownPage]:
        pending = self._pending_pages.get((rootk, rel))
        return dict(pending) if pending is not None else self.ob.pages_of(rootk, rel)

    def _queue_document(self, row: DocumentWrite) -> None:
        self._writes.append(("document", row))
        k = (row.root, row.path)
        prior = self._pending.get(k)
        known = self._pending[k] = row.known(prior)
        self.document_names.queued(k, prior, known)

    def _write_document(self, rootk: str, c: Candidate, name: PageName, facts: PageFacts,
                        document: str, state: str) -> None:
        npages = len(facts.page_sha256) or 1
        self._queue_document(DocumentWrite(
            rootk, c.rel, facts.size, facts.mtime_ns, facts.sha256, name.fonds, name.file_code,
            name.number, state, None, None, document, npages))
        self._writes.append(("file_touch", ((name.fonds, name.file_code), time.time())))

    def _write_pages(self, rootk: str, rel: str, pages: list[PageWrite],
                     stored: dict[int, KnownPage]) -> None:
        """Queue the page rows; ``stored`` is what the changes were computed from (empty for a
        document the outbox does not know: no query for it)."""
        if not pages:
            return
        current = dict(stored)
        for p in pages:
            self._writes.append(("doc_page", (rootk, rel, p)))
            current[p.page_index] = KnownPage(p.page_index, p.sha256, p.revision, p.state)
        self._pending_pages[(rootk, rel)] = current

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
        documents: list[DocumentWrite] = []
        pages: list[tuple[Any, ...]] = []
        file_sets: list[tuple[Any, ...]] = []
        events: list[tuple[Any, ...]] = []
        uploads: list[tuple[Any, ...]] = []
        now = time.time()
        # Grouped by table, each group in its order: one executemany each, one transaction.
        for op, args in writes:
            if op == "document":
                documents.append(args)
            elif op == "doc_page":
                rootk, rel, p = args
                pages.append((rootk, rel, p.page_index, p.sha256, p.revision, p.state))
            elif op == "file_touch":
                touched[args[0]] = args[1]  # once per file per batch
            elif op == "file_set":
                file_sets.append(args)
            elif op == "event":
                kind, ev, *blob = args
                events.append((ev.event_id, kind, ev.NAME, ev.key(), ev.to_json(), now,
                               blob[0] if blob else None))
            elif op == "upload":
                uploads.append((*args, now))
        with self.ob.transaction() as db:
            db.executemany(
                "INSERT INTO pages (root, path, dir, size, mtime_ns, sha256, fonds, file_code, "
                "page_no, state, reason, event_id, document, npages) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (root, path) DO UPDATE "
                "SET size=excluded.size, mtime_ns=excluded.mtime_ns, "
                "sha256=coalesce(excluded.sha256, pages.sha256), "
                "fonds=coalesce(excluded.fonds, pages.fonds), "
                "file_code=coalesce(excluded.file_code, pages.file_code), "
                "page_no=CASE WHEN excluded.npages IS NULL THEN pages.page_no "
                "             ELSE excluded.page_no END, "
                "state=excluded.state, reason=excluded.reason, "
                "event_id=coalesce(excluded.event_id, pages.event_id), "
                "document=coalesce(excluded.document, pages.document), "
                "npages=coalesce(excluded.npages, pages.npages)",
                [(d.root, d.path, d.dir, d.size, d.mtime_ns, d.sha256, d.fonds, d.file_code,
                  d.number, d.state, d.reason, d.event_id, d.document, d.npages)
                 for d in documents])
            db.executemany("INSERT OR REPLACE INTO doc_pages VALUES (?,?,?,?,?,?)", pages)
            for (fonds, file_code), column, value in file_sets:
                db.execute(
                    f"INSERT INTO file_state (fonds, file_code, {column}) VALUES (?,?,?) "
                    f"ON CONFLICT (fonds, file_code) DO UPDATE SET {column}=excluded.{column}",
                    (fonds, file_code, value))
            db.executemany(UPLOAD_SQL, uploads)
            db.executemany(ENQUEUE_SQL, events)
            db.executemany(
                "INSERT INTO file_state (fonds, file_code, last_page) VALUES (?,?,?) "
                "ON CONFLICT (fonds, file_code) DO UPDATE SET last_page=excluded.last_page",
                ((f, c, t) for (f, c), t in touched.items()))
        for d in documents:  # keep the cached folders exact
            rows = self._folders.get((d.root, d.dir))
            if rows is not None:
                rows[d.path] = (d.size, d.mtime_ns, d.state)
        # Only once committed: a failed commit (disk full) keeps them queued for the retry.
        self._writes = []
        self._pending = {}
        self.document_names.committed(((d.root, d.path), d.fonds, d.file_code, d.document,
                                       d.state) for d in documents)
        self._pending_pages = {}
        if self.wake_sender is not None:
            self.wake_sender.set()


def _load_pdf_reader() -> None:
    """Import pikepdf in a hashing thread at start (a quarter of a second of CPU), so the
    first PDF of a drop is not the one that waits for it."""
    try:
        import pikepdf  # noqa: F401

        import sohoa.pdf_pages  # noqa: F401
    except ImportError:  # told by the first PDF's check, which needs it
        pass


def _unchanged(known: Known | None, st: os.stat_result) -> bool:
    return known is not None and known.size == st.st_size and \
        known.mtime_ns == st.st_mtime_ns and known.state != "removed"


__all__ = ["Agent", "Classification", "manifest_event"]
