"""The durable local outbox: SQLite in WAL mode, the truth of what was detected and sent.

``pages`` remembers every document file seen (root, root-relative path as spelled on disk)
with its size, mtime, SHA-256 and the identity it was given (fonds, file code, document name),
so a restart does not re-send an unchanged document; ``doc_pages`` remembers each page of it
(content digest, revision), so a rescan becomes new revisions of exactly the pages that
changed. ``outbox`` holds every event to produce, in order, with its bytes frozen at detection
time, so a re-send carries the same ``event_id``. A row is marked sent only on Kafka's ack.
``files`` holds what the agent knows of each file (fonds, file code): its manifest, whether it
was closed and when a page last arrived. ``uploads`` (schema 3) holds each document file the
object store must receive before the events that name it are sent (an event's ``blob``):
content-addressed by its SHA-256, with the multipart upload in progress and its parts in
``upload_parts``, so an upload cut by a crash resumes where it stopped.
Each thread opens its own :class:`Outbox` (SQLite connections are not shared across threads).
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from sohoa.events import Event
from sohoa.naming import nfc

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    root      TEXT NOT NULL,
    path      TEXT NOT NULL,   -- '/'-separated, relative to root, as spelled on disk
    dir       TEXT NOT NULL,   -- parent of path, for per-folder walks
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT,            -- of the whole document file
    revision  INTEGER NOT NULL DEFAULT 0,  -- unused since version 2 (pages carry their own)
    fonds     TEXT,
    file_code TEXT,
    page_no   INTEGER,         -- the page number the document's name claims (single page)
    state     TEXT NOT NULL,   -- sent | removed | rejected | aux (manifest, marker)
    reason    TEXT,
    event_id  TEXT,
    document  TEXT,            -- the document's name in its file (NFC; see DocumentNames)
    npages    INTEGER,         -- pages in the document when last read
    PRIMARY KEY (root, path)
) WITHOUT ROWID;
-- Covering index for the walks: a folder's rows come from the index alone, no table lookups.
DROP INDEX IF EXISTS pages_dir;
CREATE INDEX IF NOT EXISTS pages_walk ON pages (root, dir, path, size, mtime_ns, state);
CREATE TABLE IF NOT EXISTS doc_pages (
    root       TEXT NOT NULL,
    path       TEXT NOT NULL,
    page_index INTEGER NOT NULL,  -- 1-based page of the document
    sha256     TEXT NOT NULL,     -- content digest of the page (sohoa.documents)
    revision   INTEGER NOT NULL,
    state      TEXT NOT NULL,     -- sent | removed
    PRIMARY KEY (root, path, page_index)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    kind     TEXT NOT NULL,    -- site_events | dead_letters (topic resolved at send time)
    etype    TEXT NOT NULL,    -- event name, for metrics
    key      TEXT,
    value    BLOB NOT NULL,
    created  REAL NOT NULL,
    sent     REAL,
    blob     TEXT              -- uploads.sha256 that must be stored before this is sent
);
-- The same fact is queued once, however many times it is detected.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_event ON outbox (event_id);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent IS NULL;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent) WHERE sent IS NOT NULL;
CREATE TABLE IF NOT EXISTS file_state (
    fonds       TEXT NOT NULL,
    file_code   TEXT NOT NULL,
    closed      INTEGER NOT NULL DEFAULT 0,
    manifest    TEXT,          -- JSON of the last valid manifest
    last_page   REAL,
    PRIMARY KEY (fonds, file_code)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pages_identity ON pages (fonds, file_code, document)
    WHERE state IN ('sent', 'rejected');
CREATE TABLE IF NOT EXISTS uploads (
    sha256    TEXT PRIMARY KEY,  -- the document's: object <site>/<sha256[:2]>/<sha256>
    root      TEXT NOT NULL,     -- where its bytes were found (any present document with the
    path      TEXT NOT NULL,     --   same SHA-256 serves as well)
    size      INTEGER NOT NULL,
    state     TEXT NOT NULL,     -- pending | stored | lost (bytes gone from the disk unsent)
    created   REAL NOT NULL,
    stored    REAL,
    upload_id TEXT,              -- the multipart upload in progress
    part_size INTEGER,
    attempts  INTEGER NOT NULL DEFAULT 0,
    error     TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS uploads_pending ON uploads (created) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS upload_parts (
    sha256   TEXT NOT NULL,
    number   INTEGER NOT NULL,
    etag     TEXT NOT NULL,
    checksum TEXT NOT NULL,      -- base64 SHA-256 of the part, as the store verified it
    size     INTEGER NOT NULL,
    PRIMARY KEY (sha256, number)
) WITHOUT ROWID;
"""
# Run after SCHEMA: needs the outbox's `blob` column (added by the migration on old files).
INDEXES_V3 = """
CREATE INDEX IF NOT EXISTS outbox_blob ON outbox (blob) WHERE blob IS NOT NULL AND sent IS NULL;
"""

# The columns of `pages` a DocumentRow carries, in its order.
_DOC_COLUMNS = ("path, size, mtime_ns, sha256, state, fonds, file_code, page_no, document, "
                "npages")


class Known(NamedTuple):
    """What the outbox holds of one document file (a row of ``pages``). A named tuple, not a
    frozen dataclass: the agent's loop builds one per page, and a frozen dataclass's
    ``__init__`` costs about three times a tuple's."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    state: str
    fonds: str | None
    file_code: str | None
    number: int | None
    document: str | None
    npages: int | None


class KnownPage(NamedTuple):
    page_index: int
    sha256: str
    revision: int
    state: str


class Pending(NamedTuple):
    """An unsent event, in order (the sender builds one per event it hands to Kafka)."""

    seq: int
    event_id: str
    kind: str
    etype: str
    key: str | None
    value: bytes


@dataclass(frozen=True, slots=True)
class UploadDepth:
    documents: int
    pages: int
    bytes: int
    oldest_s: float


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(str(path), timeout=60, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a killed agent (it is in the WAL, in the OS
        # cache); only a power cut can lose the last commits. That loses nothing either: the
        # pages are still on disk, the start-up walk detects them again and the deterministic
        # event ids make any re-send a replay the centre ignores. FULL would fsync every batch.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA busy_timeout=60000")
        self.db.execute("PRAGMA cache_size=-8000")
        self._migrate()

    def _migrate(self) -> None:
        # Each step is idempotent, so an upgrade cut short is simply run again.
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        old = {r[1] for r in self.db.execute("PRAGMA table_info(pages)")}
        for column, kind in (("document", "TEXT"), ("npages", "INTEGER")):
            if old and column not in old:
                self.db.execute(f"ALTER TABLE pages ADD COLUMN {column} {kind}")
        self.db.executescript(SCHEMA)  # (commits: not inside a transaction)
        if version < 2 and old:
            with self.transaction() as db:
                upgrade_v1(db)
        # 2 -> 3: events may wait for their document's upload. Existing rows wait for none.
        if "blob" not in {r[1] for r in self.db.execute("PRAGMA table_info(outbox)")}:
            self.db.execute("ALTER TABLE outbox ADD COLUMN blob TEXT")
        self.db.executescript(INDEXES_V3)
        if version < SCHEMA_VERSION:
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            # SQLite may already have rolled back (a full disk does that): a second ROLLBACK
            # would raise and hide the real error; a failed COMMIT may leave it open.
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    # --- documents --------------------------------------------------------------------------

    def known_in_dir(self, root: str, rel_dir: str) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, state) of a folder's rows: all a walk needs to skip them."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, state FROM pages WHERE root = ? AND dir = ?",
            (root, rel_dir)).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def known(self, root: str, rel_path: str) -> Known | None:
        r = self.db.execute(f"SELECT {_DOC_COLUMNS} FROM pages WHERE root = ? AND path = ?",
                            (root, rel_path)).fetchone()
        return Known(*r) if r else None

    def pages_of(self, root: str, rel_path: str) -> dict[int, KnownPage]:
        return {r[0]: KnownPage(*r) for r in self.db.execute(
            "SELECT page_index, sha256, revision, state FROM doc_pages "
            "WHERE root = ? AND path = ?", (root, rel_path))}

    def documents_named(self, fonds: str, file_code: str, document: str) -> list[tuple[str, str]]:
        """(root, path) of the present documents that hold this identity."""
        return self.db.execute(
            "SELECT root, path FROM pages WHERE fonds = ? AND file_code = ? AND document = ? "
            "AND state IN ('sent', 'rejected')", (fonds, file_code, document)).fetchall()

    def documents_of_file(self, fonds: str | None, file_code: str | None
                          ) -> list[tuple[str, str, str]]:
        """(document, root, path) of the file's present documents."""
        return self.db.execute(
            "SELECT document, root, path FROM pages WHERE fonds = ? AND file_code = ? "
            "AND state IN ('sent', 'rejected')", (fonds, file_code)).fetchall()

    def dirs_with_present(self, root: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT dir FROM pages WHERE root = ? AND state != 'removed'", (root,))]

    def pages_in_file(self, fonds: str, file_code: str) -> int:
        """Pages of the file's present documents (every root, every spelling of its folder)."""
        return self.db.execute(
            "SELECT count(*) FROM doc_pages d JOIN pages p USING (root, path) "
            "WHERE p.fonds = ? AND p.file_code = ? AND p.state = 'sent' AND d.state = 'sent'",
            (fonds, file_code)).fetchone()[0]

    # --- files ------------------------------------------------------------------------------

    def file_row(self, fonds: str, file_code: str) -> tuple[int, str | None, float | None] | None:
        return self.db.execute(
            "SELECT closed, manifest, last_page FROM file_state WHERE fonds = ? AND file_code = ?",
            (fonds, file_code)).fetchone()

    def open_files_idle_since(self, cutoff: float) -> list[tuple[str, str]]:
        return self.db.execute(
            "SELECT fonds, file_code FROM file_state WHERE closed = 0 AND last_page IS NOT NULL "
            "AND last_page < ?", (cutoff,)).fetchall()

    def file_dirs(self, fonds: str, file_code: str) -> list[tuple[str, str]]:
        """(root, dir) of every folder that holds a present document of the file."""
        return self.db.execute(
            "SELECT DISTINCT root, dir FROM pages WHERE fonds = ? AND file_code = ? "
            "AND state != 'removed'", (fonds, file_code)).fetchall()

    # --- outbox -----------------------------------------------------------------------------

    def unsent(self, after_seq: int, limit: int) -> list[Pending]:
        """Unsent events in order, up to the first that waits for an upload: events keep
        their order (a closing marker never overtakes its file's pages)."""
        barrier = self.upload_barrier()
        rows = self.db.execute(
            "SELECT seq, event_id, kind, etype, key, value FROM outbox "
            "WHERE sent IS NULL AND seq > ? AND seq < ? ORDER BY seq LIMIT ?",
            (after_seq, barrier if barrier is not None else 2**62, limit))
        return [Pending(*r) for r in rows]

    def upload_barrier(self) -> int | None:
        """The first unsent event whose document is not stored yet (None: none waits)."""
        return self.db.execute(
            "SELECT min(o.seq) FROM uploads u JOIN outbox o ON o.blob = u.sha256 "
            "AND o.sent IS NULL WHERE u.state = 'pending'").fetchone()[0]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET sent = ? WHERE seq = ?", ((now, s) for s in seqs))

    def depth(self) -> tuple[int, float]:
        """Unsent events and the age in seconds of the oldest one."""
        n, oldest = self.db.execute(
            "SELECT count(*), min(created) FROM outbox WHERE sent IS NULL").fetchone()
        return n, (max(0.0, time.time() - oldest) if oldest else 0.0)

    def upload_depth(self) -> UploadDepth:
        """Documents waiting for the object store, their bytes, the pages (events) that wait
        for them and the age of the oldest."""
        docs, size, oldest = self.db.execute(
            "SELECT count(*), coalesce(sum(size), 0), min(created) FROM uploads "
            "WHERE state = 'pending'").fetchone()
        pages = self.db.execute(
            "SELECT count(*) FROM uploads u JOIN outbox o ON o.blob = u.sha256 "
            "AND o.sent IS NULL WHERE u.state = 'pending'").fetchone()[0] if docs else 0
        return UploadDepth(docs, pages, size,
                           max(0.0, time.time() - oldest) if oldest else 0.0)

    def prune_sent(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        with self.transaction() as db:
            return db.execute("DELETE FROM outbox WHERE sent IS NOT NULL AND sent < ?",
                              (cutoff,)).rowcount


ENQUEUE_SQL = ("INSERT OR IGNORE INTO outbox (event_id, kind, etype, key, value, created, "
               "blob) VALUES (?, ?, ?, ?, ?, ?, ?)")
# A document to store; one found again after its bytes were lost becomes pending again.
UPLOAD_SQL = ("INSERT INTO uploads (sha256, root, path, size, state, created) "
              "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT (sha256) DO UPDATE SET "
              "root = excluded.root, path = excluded.path, error = NULL, "
              "state = CASE WHEN uploads.state = 'lost' THEN 'pending' ELSE uploads.state END")


def enqueue(db: sqlite3.Connection, kind: str, event: Event) -> None:
    """Add one event to the outbox (call inside a transaction, with the page row's update)."""
    db.execute(ENQUEUE_SQL,
               (event.event_id, kind, event.NAME, event.key(), event.to_json(), time.time(),
                None))


def upgrade_v1(db: sqlite3.Connection) -> None:
    """An outbox written before documents (schema version 1) in version 2's terms.

    A version-1 row was one image, one page, keyed by its NFC path: it becomes a document named
    by its file's NFC name (the rule migration 005 applies at the centre, so the ids agree),
    whose only page carries its digest and revision; its path is re-spelled as on disk, so the
    next walk finds it unchanged instead of reporting it removed and found again. The files
    table is re-keyed by fonds and file code."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'files'").fetchone():
        db.execute(
            "INSERT OR REPLACE INTO file_state (fonds, file_code, closed, manifest, last_page) "
            "SELECT p.fonds, p.file_code, max(f.closed), max(f.manifest), max(f.last_page) "
            "FROM files f JOIN (SELECT DISTINCT root, dir, fonds, file_code FROM pages "
            "                   WHERE file_code IS NOT NULL) p "
            "ON p.root = f.root AND p.dir = f.file_dir GROUP BY p.fonds, p.file_code")
        db.execute("DROP TABLE files")
    rows = db.execute("SELECT root, path, sha256, revision, state FROM pages").fetchall()
    respell = _Respeller()
    for root, path, sha, revision, state in rows:
        name = path.rpartition("/")[2]
        db.execute("UPDATE pages SET document = ?, npages = 1 WHERE root = ? AND path = ?",
                   (nfc(name), root, path))
        if sha is not None and revision and state in ("sent", "removed"):
            db.execute("INSERT OR IGNORE INTO doc_pages VALUES (?, ?, 1, ?, ?, ?)",
                       (root, path, sha, revision, state))
        on_disk = respell.spelling(root, path)
        if on_disk is not None and on_disk != path:
            db.execute("UPDATE pages SET path = ?, dir = ? WHERE root = ? AND path = ?",
                       (on_disk, on_disk.rpartition("/")[0], root, path))
            db.execute("UPDATE doc_pages SET path = ? WHERE root = ? AND path = ?",
                       (on_disk, root, path))


class _Respeller:
    """Finds how an NFC relative path is spelled on disk (one listing per folder)."""

    def __init__(self) -> None:
        self._listings: dict[str, dict[str, str]] = {}

    def spelling(self, root: str, rel: str) -> str | None:
        parts, here = [], root
        for want in rel.split("/"):
            names = self._listings.get(here)
            if names is None:
                try:
                    names = {nfc(n): n for n in os.listdir(here)}
                except OSError:
                    return None
                self._listings[here] = names
            got = names.get(nfc(want))
            if got is None:
                return None
            parts.append(got)
            here = os.path.join(here, got)
        return "/".join(parts)
