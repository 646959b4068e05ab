"""Stores each detected document in the object store before the events that name it are sent.

Runs as a thread of the sender child (producers/sender.py), never on the agent's loop, so
detection never waits on the network. Documents are sent one at a time, one request body on
the wire at a time, in the order they were detected (the outbox's ``uploads``; the sender holds
back every event from the first one whose document is not stored yet, so a file's events keep
their order). A second thread (producers/read_ahead.py) reads and hashes one part ahead of the
one being sent, and asks the store about the next document and reads its first part while the
current one's last part is on the wire; nothing it read is sent unless the document's turn
comes with the same outbox row:

- HEAD first: an object already under the document's key with its size and declared SHA-256
  is the same content (keys are content addresses), so a re-upload is a no-op (a document gone
  from the disk but already stored is stored, not lost);
- a document up to ``upload.multipart_threshold_bytes`` goes in one PUT, a larger one in parts
  of ``upload.part_size_bytes``. The multipart upload id and each part the store acknowledged
  are committed to the outbox as they happen: after a crash the parts the store still lists
  with the same SHA-256 are kept and only the rest is sent;
- every request carries the SHA-256 of its bytes, which the store verifies on receipt; the
  store's answer is compared with the local one (the whole document's for one PUT, S3's
  composite checksum of the parts' digests for a multipart upload), and the document's own
  SHA-256 is recomputed from the very bytes sent (each part read into a buffer of its own, never
  rewritten) before the upload is completed: bytes that changed since detection are never
  stored under the old address (the agent sees the change and sends new events);
- bytes gone from the disk before they could be stored (deleted, replaced) make the upload
  ``lost``: its events are sent anyway (the centre reports the pages unreadable; a rescan
  brings new ones) rather than holding every later event back forever;
- ``upload.max_bytes_per_s`` caps the rate (a token bucket on the request bodies) and
  ``upload.hours``/``upload.days`` restrict uploads to working hours;
- an unreachable or failing store (down, disk full) is retried with a backoff up to
  ``upload.retry_max_s``, logged once per distinct error.

The agent only ever opens originals read-only (``O_RDONLY | O_NOFOLLOW``).
"""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from producers.outbox import Outbox
from producers.read_ahead import DocumentReader, ReadAhead
from sohoa.config import Settings, UploadConfig
from sohoa.disk import disk_full
from sohoa.objectstore import (
    ChecksumMismatch,
    ObjectStore,
    Part,
    RateLimit,
    StoreError,
    b64,
    composite_sha256,
    page_key,
)

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | \
    getattr(os, "O_BINARY", 0)


@dataclass(frozen=True, slots=True)
class UploadJob:
    sha256: str
    root: str
    path: str
    size: int
    upload_id: str | None
    part_size: int | None


class Lost(Exception):
    """The document's bytes are no longer on the disk as they were detected."""

    upload_id: str | None = None  # the multipart upload it ended, to abort


class UploadQueue:
    """The outbox's ``uploads`` and ``upload_parts`` tables, as the uploader uses them."""

    def __init__(self, ob: Outbox) -> None:
        self.ob = ob
        self.db = ob.db

    def next(self, after: UploadJob | None = None) -> UploadJob | None:
        """The first pending document, or the one after ``after`` (still pending while it is
        being stored), in the order of the events that wait for them (the sender sends in
        that order)."""
        r = self.db.execute(
            "SELECT sha256, root, path, size, upload_id, part_size FROM uploads u "
            "WHERE state = 'pending' AND sha256 IS NOT ? ORDER BY (SELECT min(seq) "
            "FROM outbox o WHERE o.blob = u.sha256 AND o.sent IS NULL), created LIMIT 1",
            (after.sha256 if after is not None else None,)).fetchone()
        return UploadJob(*r) if r else None

    def sources(self, job: UploadJob) -> list[tuple[str, str]]:
        """Where the bytes may be read: the path recorded, then any present document with the
        same SHA-256 (a copy elsewhere in the hot folder serves as well)."""
        others = self.db.execute(
            "SELECT root, path FROM pages WHERE sha256 = ? AND state = 'sent'",
            (job.sha256,)).fetchall()
        return [(job.root, job.path), *[tuple(o) for o in others
                                        if tuple(o) != (job.root, job.path)]]

    def started(self, sha: str, upload_id: str, part_size: int) -> None:
        with self.ob.transaction() as db:
            db.execute("UPDATE uploads SET upload_id = ?, part_size = ? WHERE sha256 = ?",
                       (upload_id, part_size, sha))
            db.execute("DELETE FROM upload_parts WHERE sha256 = ?", (sha,))

    def parts(self, sha: str) -> dict[int, Part]:
        return {r[0]: Part(*r) for r in self.db.execute(
            "SELECT number, etag, checksum, size FROM upload_parts WHERE sha256 = ?", (sha,))}

    def part_done(self, sha: str, p: Part) -> None:
        with self.ob.transaction() as db:
            db.execute("INSERT OR REPLACE INTO upload_parts VALUES (?,?,?,?,?)",
                       (sha, p.number, p.etag, p.checksum_sha256, p.size))

    def reset(self, sha: str) -> None:
        with self.ob.transaction() as db:
            db.execute("UPDATE uploads SET upload_id = NULL, part_size = NULL WHERE sha256 = ?",
                       (sha,))
            db.execute("DELETE FROM upload_parts WHERE sha256 = ?", (sha,))

    def finish(self, sha: str, state: str, error: str | None = None) -> None:
        with self.ob.transaction() as db:
            db.execute("UPDATE uploads SET state = ?, stored = ?, error = ?, upload_id = NULL "
                       "WHERE sha256 = ?", (state, time.time(), error, sha))
            db.execute("DELETE FROM upload_parts WHERE sha256 = ?", (sha,))

    def failed(self, sha: str, error: str) -> None:
        with self.ob.transaction() as db:
            db.execute("UPDATE uploads SET attempts = attempts + 1, error = ? WHERE sha256 = ?",
                       (error[:500], sha))


def open_now(cfg: UploadConfig, now: datetime) -> bool:
    """Inside the configured working hours (``now`` in the campaign's timezone)?"""
    if now.weekday() not in cfg.days:
        return False
    if not cfg.hours:
        return True
    hm = now.strftime("%H:%M")
    return any(span[:5] <= hm < span[6:] for span in cfg.hours)


class Uploader(threading.Thread):
    def __init__(self, settings: Settings, on_stored: Callable[[], None],
                 store: ObjectStore | None = None) -> None:
        super().__init__(name="uploader", daemon=True)
        self.settings = settings
        self.cfg = settings.upload
        self.site = settings.watcher.site_id
        self.bucket = settings.store.pages_bucket
        # No retries inside botocore: this loop retries with its own backoff and logging.
        self.store = store or ObjectStore(settings.store, retries=0)
        self.limit = RateLimit(self.cfg.max_bytes_per_s)
        self.on_stored = on_stored
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.last_error: str | None = None
        self.error: BaseException | None = None
        self.stored_docs = 0
        self.stored_bytes = 0
        self.sent_bytes = 0
        self._tz: Any = None
        self._reads = ReadAhead()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the sender, which exits non-zero
            log.exception("uploader crashed")
            self.error = exc

    def _now(self) -> datetime:
        if self._tz is None:
            from zoneinfo import ZoneInfo

            self._tz = ZoneInfo(self.settings.campaign.timezone)
        return datetime.now(self._tz)

    def _run(self) -> None:
        self._warm()
        ob = Outbox(self.settings.watcher.outbox_path)
        queue = UploadQueue(ob)
        backoff = 1.0
        closed_logged = False
        ahead: DocumentReader[UploadJob] | None = None  # the next document, being read
        try:
            while not self.stopping.is_set():
                if not open_now(self.cfg, self._now()):
                    if ahead is not None:
                        ahead.close()
                        ahead = None
                    if not closed_logged:
                        log.info("outside upload hours; uploads wait",
                                 extra={"hours": self.cfg.hours, "days": self.cfg.days})
                        closed_logged = True
                    self.stopping.wait(min(30.0, _seconds_to_next_minute(self._now())))
                    continue
                closed_logged = False
                job = None
                try:
                    job = queue.next()
                    if ahead is not None and (job is None or ahead.job != job):
                        ahead.close()  # the order changed meanwhile: read it again later
                        ahead = None
                    if job is None:
                        self.wake.wait(1.0)
                        self.wake.clear()
                        continue
                    current, ahead = ahead, None
                    ahead = self._upload(queue, job, current, read_next=True)
                except sqlite3.OperationalError as exc:
                    if not disk_full(exc):
                        raise
                    self._note("outbox disk is full; uploads wait", str(exc))
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, self.cfg.retry_max_s)
                    continue
                except (StoreError, OSError) as exc:
                    msg = f"{type(exc).__name__}: {exc}"
                    self._note(_headline(exc), msg)
                    if job is not None:  # raised by the upload, not by reading the queue
                        queue.failed(job.sha256, msg)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, self.cfg.retry_max_s)
                    continue
                if self.last_error is not None:
                    log.info("object store reachable; uploads resumed")
                    self.last_error = None
                backoff = 1.0
                self.on_stored()
        finally:
            if ahead is not None:
                ahead.close()
            self._reads.shutdown()
            ob.close()

    def _warm(self) -> None:
        """The S3 client ready before the first document arrives (its import and model are
        CPU the first upload would otherwise wait for); a failure here is only logged: the
        first upload builds the client again and reports what is wrong."""
        try:
            self.store.warm()
        except Exception as exc:
            log.debug("could not prepare the object store client", extra={"error": str(exc)})

    def _note(self, headline: str, msg: str) -> None:
        if msg != self.last_error:
            log.error(headline, extra={"error": msg})
        self.last_error = msg

    # --- one document ------------------------------------------------------------------------
    def _upload(self, queue: UploadQueue, job: UploadJob,
                reader: DocumentReader[UploadJob] | None = None,
                read_next: bool = False) -> DocumentReader[UploadJob] | None:
        """Store ``job`` (``reader``: its bytes already being read). With ``read_next``, start
        reading the next document meanwhile (as soon as one is queued) and return its reader."""
        following: DocumentReader[UploadJob] | None = None

        def start_next() -> None:
            nonlocal following
            if read_next and following is None:
                then = queue.next(after=job)
                if then is not None:
                    following = self._read(queue, then)  # read once this one is read whole

        try:
            if reader is None:
                reader = self._read(queue, job)
            start_next()
            self._store(queue, job, reader, start_next)
        except BaseException:
            if following is not None:
                following.close()
            raise
        finally:
            if reader is not None:
                reader.close()
        return following

    def _read(self, queue: UploadQueue, job: UploadJob) -> DocumentReader[UploadJob]:
        """Open the document and queue its HEAD and the reading of its parts."""
        f: io.FileIO | OSError | Lost
        try:
            f = self._open(queue, job)
        except (Lost, OSError) as exc:
            f = exc  # told after the HEAD: the store may hold these bytes already
        if job.size <= self.cfg.multipart_threshold_bytes:
            part_size = job.size + 1  # one part: one byte over shows a file that grew
        else:
            part_size = job.part_size or self.cfg.part_size_bytes
        key = page_key(self.site, job.sha256)
        return self._reads.start(job, f, part_size, lambda: self._already_stored(key, job))

    def _store(self, queue: UploadQueue, job: UploadJob, reader: DocumentReader[UploadJob],
               start_next: Callable[[], None]) -> None:
        key = page_key(self.site, job.sha256)
        try:
            if reader.stored():
                # (also a crash between the multipart's completion and its commit here)
                queue.finish(job.sha256, "stored")
                return
            if job.size <= self.cfg.multipart_threshold_bytes:
                self._put(reader, job, key)
            else:
                self._multipart(queue, reader, job, key, start_next)
        except Lost as exc:
            log.warning("document changed or gone before it was stored; its events are sent "
                        "without it", extra={"path": job.path, "reason": str(exc)})
            upload_id = exc.upload_id or job.upload_id
            if upload_id:
                self._abort(key, upload_id)
            queue.finish(job.sha256, "lost", str(exc))
            return
        queue.finish(job.sha256, "stored")
        self.stored_docs += 1
        self.stored_bytes += job.size

    def _already_stored(self, key: str, job: UploadJob) -> bool:
        head = self.store.head(self.bucket, key)
        if head is None:
            return False
        if head.size == job.size and head.sha256_meta == job.sha256:
            return True
        raise StoreError(f"{key} already holds other bytes ({head.size} bytes): refusing to "
                         "write over it", "Conflict", transient=False)

    def _open(self, queue: UploadQueue, job: UploadJob) -> io.FileIO:
        missing_root = None
        for root, path in queue.sources(job):
            full = os.path.join(root, *path.split("/"))
            try:
                fd = os.open(full, _OPEN_FLAGS)
            except FileNotFoundError:
                if not os.path.isdir(root):
                    missing_root = root
                continue
            except OSError:
                continue
            if os.fstat(fd).st_size == job.size:
                return os.fdopen(fd, "rb", buffering=0)
            os.close(fd)
        if missing_root is not None:
            # A share that is away is not a lost document: try again later.
            raise OSError(f"root {missing_root} is not available")
        raise Lost("no file with these bytes is on the disk any more")

    def _put(self, reader: DocumentReader[UploadJob], job: UploadJob, key: str) -> None:
        data = memoryview(b"")
        for _, data, _ in reader.parts():
            if len(data) != job.size:
                break
        if len(data) > job.size:
            raise Lost(f"the file grew past its {job.size} bytes")
        if len(data) < job.size:
            raise Lost(f"the file is now {len(data)} bytes, not {job.size}")
        if reader.sha256 != job.sha256:
            raise Lost("the file's bytes changed since they were hashed")
        try:
            self.store.put(self.bucket, key, data, job.sha256, limit=self.limit)
        except StoreError as exc:
            if exc.code not in ("PreconditionFailed", "412") or \
                    not self._already_stored(key, job):
                raise
        self.sent_bytes += len(data)

    def _multipart(self, queue: UploadQueue, reader: DocumentReader[UploadJob], job: UploadJob,
                   key: str, start_next: Callable[[], None]) -> None:
        upload_id = job.upload_id
        part_size = job.part_size or self.cfg.part_size_bytes
        done: dict[int, Part] = {}
        if upload_id is not None:
            try:
                listed = self.store.list_parts(self.bucket, key, upload_id)
            except StoreError as exc:
                if exc.code != "NoSuchUpload":
                    raise
                listed = None
            if listed is None:
                queue.reset(job.sha256)
                upload_id = None
            else:
                # Kept: parts recorded here that the store still holds with the same digest.
                done = {n: p for n, p in queue.parts(job.sha256).items()
                        if n in listed and listed[n].etag == p.etag
                        and listed[n].checksum_sha256 in ("", p.checksum_sha256)}
                if done:
                    log.info("resuming upload", extra={"path": job.path,
                                                       "parts_kept": len(done)})
        if upload_id is None:
            upload_id = self.store.create_multipart(self.bucket, key, job.sha256)
            queue.started(job.sha256, upload_id, part_size)
        try:
            self._send_parts(queue, reader, job, key, upload_id, done, start_next)
        except Lost as exc:
            exc.upload_id = upload_id  # begun in this run, perhaps: job does not know it
            raise

    def _send_parts(self, queue: UploadQueue, reader: DocumentReader[UploadJob], job: UploadJob,
                    key: str, upload_id: str, done: dict[int, Part],
                    start_next: Callable[[], None]) -> None:
        parts: list[Part] = []
        digests: list[bytes] = []
        # Read and hashed one part ahead, in the reader thread, while this one is sent.
        for number, data, digest in reader.parts():
            start_next()  # a document queued since this one began: its HEAD and reading
            n = len(data)
            digests.append(digest)
            kept = done.get(number)
            if kept is not None and kept.checksum_sha256 == b64(digest) and kept.size == n:
                parts.append(kept)
                continue
            p = self.store.upload_part(self.bucket, key, upload_id, number, data,
                                       limit=self.limit, digest=digest)
            queue.part_done(job.sha256, p)
            parts.append(p)
            self.sent_bytes += n
        if reader.sha256 != job.sha256:
            raise Lost("the file's bytes changed since they were hashed")
        start_next()
        try:
            got = self.store.complete(self.bucket, key, upload_id, parts)
        except StoreError as exc:
            if exc.code in ("PreconditionFailed", "412") and self._already_stored(key, job):
                self._abort(key, upload_id)
                return
            if exc.code == "NoSuchUpload":
                queue.reset(job.sha256)
            raise
        want = composite_sha256(digests)
        if got and got != want:
            raise ChecksumMismatch(f"store's checksum {got} is not the parts' {want}")

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self.store.abort(self.bucket, key, upload_id)
        except StoreError as exc:
            log.warning("could not abort a multipart upload (the store expires it)",
                        extra={"key": key, "error": str(exc)})


def _headline(exc: BaseException) -> str:
    """What an operator should know first about a failed upload."""
    code = getattr(exc, "code", "")
    if code == "unreachable":
        why = "object store unreachable"
    elif code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        why = "object store refused this site's key (check [store] access_key_id and its rights)"
    elif code in ("InternalError", "500", "503", "ServiceUnavailable", "SlowDown"):
        why = "object store failed to write (its disk full or a volume down: see its log)"
    elif isinstance(exc, OSError):
        why = "cannot read the document here"
    else:
        why = "upload failed"
    return f"{why}; the document stays queued and is retried"


def _seconds_to_next_minute(now: datetime) -> float:
    nxt = (now + timedelta(minutes=1)).replace(second=0, microsecond=0)
    return max(1.0, (nxt - now).total_seconds())
