"""The durable local outbox: SQLite in WAL mode, the truth of what was detected and sent.

``pages`` remembers every page path seen (root, NFC root-relative path) with its size, mtime,
SHA-256 and revision, so a restart does not re-send an unchanged page and a rescan becomes a new
revision. ``outbox`` holds every event to produce, in order, with its bytes frozen at detection
time, so a re-send carries the same ``event_id``. A row is marked sent only on Kafka's ack.
Each thread opens its own :class:`Outbox` (SQLite connections are not shared across threads).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sohoa.events import Event

SCHEMA = """
CREATE TABLE IF NOT EXISTS pages (
    root      TEXT NOT NULL,
    path      TEXT NOT NULL,   -- NFC, '/'-separated, relative to root
    dir       TEXT NOT NULL,   -- parent of path, for per-folder reconcile
    size      INTEGER NOT NULL,
    mtime_ns  INTEGER NOT NULL,
    sha256    TEXT,
    revision  INTEGER NOT NULL DEFAULT 0,
    fonds     TEXT,
    file_code TEXT,
    page_no   INTEGER,
    state     TEXT NOT NULL,   -- sent | removed | rejected | aux (manifest, marker)
    reason    TEXT,
    event_id  TEXT,
    PRIMARY KEY (root, path)
) WITHOUT ROWID;
-- Covering index for the walks: a folder's rows come from the index alone, no table lookups.
DROP INDEX IF EXISTS pages_dir;
CREATE INDEX IF NOT EXISTS pages_walk ON pages (root, dir, path, size, mtime_ns, state);
CREATE TABLE IF NOT EXISTS outbox (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    kind     TEXT NOT NULL,    -- site_events | dead_letters (topic resolved at send time)
    etype    TEXT NOT NULL,    -- event name, for metrics
    key      TEXT,
    value    BLOB NOT NULL,
    created  REAL NOT NULL,
    sent     REAL
);
-- The same fact is queued once, however many times it is detected.
CREATE UNIQUE INDEX IF NOT EXISTS outbox_event ON outbox (event_id);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE sent IS NULL;
CREATE INDEX IF NOT EXISTS outbox_sent ON outbox (sent) WHERE sent IS NOT NULL;
CREATE TABLE IF NOT EXISTS files (
    root        TEXT NOT NULL,
    file_dir    TEXT NOT NULL,
    closed      INTEGER NOT NULL DEFAULT 0,
    manifest    TEXT,          -- JSON of the last valid manifest
    last_page   REAL,
    PRIMARY KEY (root, file_dir)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Known:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    revision: int
    state: str
    fonds: str | None
    file_code: str | None
    page_no: int | None


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    event_id: str
    kind: str
    etype: str
    key: str | None
    value: bytes


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
        self.db.executescript(SCHEMA)

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

    # --- pages ------------------------------------------------------------------------------

    def known_in_dir(self, root: str, rel_dir: str) -> dict[str, tuple[int, int, str]]:
        """path -> (size, mtime_ns, state) of a folder's rows: all a walk needs to skip them."""
        rows = self.db.execute(
            "SELECT path, size, mtime_ns, state FROM pages WHERE root = ? AND dir = ?",
            (root, rel_dir)).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def known(self, root: str, rel_path: str) -> Known | None:
        r = self.db.execute(
            "SELECT path, size, mtime_ns, sha256, revision, state, fonds, file_code, page_no "
            "FROM pages WHERE root = ? AND path = ?", (root, rel_path)).fetchone()
        return Known(*r) if r else None

    def dirs_with_present(self, root: str) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT dir FROM pages WHERE root = ? AND state != 'removed'", (root,))]

    def pages_in_file(self, root: str, file_dir: str) -> int:
        return self.db.execute(
            "SELECT count(*) FROM pages WHERE root = ? AND dir = ? AND state = 'sent'",
            (root, file_dir)).fetchone()[0]

    # --- files ------------------------------------------------------------------------------

    def file_row(self, root: str, file_dir: str) -> tuple[int, str | None, float | None] | None:
        return self.db.execute(
            "SELECT closed, manifest, last_page FROM files WHERE root = ? AND file_dir = ?",
            (root, file_dir)).fetchone()

    def open_files_idle_since(self, cutoff: float) -> list[tuple[str, str]]:
        return self.db.execute(
            "SELECT root, file_dir FROM files WHERE closed = 0 AND last_page IS NOT NULL "
            "AND last_page < ?", (cutoff,)).fetchall()

    # --- outbox -----------------------------------------------------------------------------

    def unsent(self, after_seq: int, limit: int) -> list[Pending]:
        rows = self.db.execute(
            "SELECT seq, event_id, kind, etype, key, value FROM outbox "
            "WHERE sent IS NULL AND seq > ? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [Pending(*r) for r in rows]

    def mark_sent(self, seqs: Iterable[int]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE outbox SET sent = ? WHERE seq = ?", ((now, s) for s in seqs))

    def depth(self) -> tuple[int, float]:
        """Unsent events and the age in seconds of the oldest one."""
        n, oldest = self.db.execute(
            "SELECT count(*), min(created) FROM outbox WHERE sent IS NULL").fetchone()
        return n, (max(0.0, time.time() - oldest) if oldest else 0.0)

    def prune_sent(self, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        with self.transaction() as db:
            return db.execute("DELETE FROM outbox WHERE sent IS NOT NULL AND sent < ?",
                              (cutoff,)).rowcount


ENQUEUE_SQL = ("INSERT OR IGNORE INTO outbox (event_id, kind, etype, key, value, created) "
               "VALUES (?, ?, ?, ?, ?, ?)")


def enqueue(db: sqlite3.Connection, kind: str, event: Event) -> None:
    """Add one event to the outbox (call inside a transaction, with the page row's update)."""
    db.execute(ENQUEUE_SQL,
               (event.event_id, kind, event.NAME, event.key(), event.to_json(), time.time()))
