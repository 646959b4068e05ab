"""The writer: a prepared batch into PostgreSQL, in the caller's transaction, exactly once.

A batch is first assumed all new: under a savepoint its audit rows (the audit row of an
applied event doubles as its dedup record), its new page revisions and its page checks are
COPYed straight into `audit_log`, `page_revisions` and `page_checks`. Almost every batch is all
new, and COPY is the cheapest way in. When a row is already there (a replay, or another event
for a stored page revision), the savepoint is rolled back and the batch takes the careful
(dedup) path: events already in `audit_log` are dropped in SQL, revisions are upserted and the
checks of the events left are inserted. Both paths then run the same merges
(:mod:`consumers.apply.statements`) and end in the same rows.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from consumers.apply.prepared import Prepared, prepare
from consumers.apply.records import BatchResult, DeadLetterRow, Record, SiteDefaults, reason_class
from consumers.apply.sql_files import NEW_SITES
from consumers.apply.sql_pages import REPICK
from consumers.apply.staging import (
    AUDIT,
    CHECKS,
    COPY_STAGE,
    COPY_STAGE_CHECKS,
    COPY_TOUCHED_FILES,
    CREATE_TEMP,
    REVISIONS,
)
from consumers.apply.statements import (
    COUNT_STAGED,
    DEAD_LETTER_ROW,
    DEDUP_APPLIED,
    MERGE_SCRIPTS,
    OFFSETS,
    PLAN_SHARED,
    merge_steps,
)
from consumers.db import PLAN_LOCK

log = logging.getLogger(__name__)


class BatchApplier:
    """Writes batches on one connection; the caller owns the transaction."""

    def __init__(self, conn: psycopg.Connection, group_id: str,
                 site_defaults: SiteDefaults | None = None, *, copy_first: bool = True) -> None:
        self.conn = conn
        self.group_id = group_id
        self.site_defaults = site_defaults or SiteDefaults()
        # False: every batch takes the dedup path (the tests compare the two paths' tables).
        self.copy_first = copy_first
        # Seconds per statement, summed over batches, when a benchmark asks (None: off).
        self.timings: defaultdict[str, float] | None = None
        with conn.transaction():
            conn.execute(CREATE_TEMP)
            # Safe for exactly-once: a batch and its offsets commit together, so a server crash
            # that loses the last commits rewinds both, and the consumer re-reads those records.
            conn.execute("SET synchronous_commit TO off")
            # Each batch statement runs in milliseconds; a misestimate of the (statistics-less)
            # staging table can push one over jit_above_cost, and compiling then takes longer
            # than running it.
            conn.execute("SET jit TO off")
            # Assembly page lists and OCR page lists are TOASTed, in the staging table and in
            # their own: lz4 compresses them several times faster than the default pglz.
            # Servers built without lz4 keep pglz.
            if conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                            " WHERE name = 'default_toast_compression'").fetchone() == (True,):
                conn.execute("SET default_toast_compression TO lz4")

    def apply(self, records: list[Record], *, commit_offsets: bool = True) -> BatchResult:
        """Parse and write ``records`` and (optionally) their offsets; call in a transaction."""
        return self.write(prepare(records), commit_offsets=commit_offsets)

    def write(self, prepared: Prepared, *, commit_offsets: bool = True) -> BatchResult:
        """Write a batch :func:`prepare` made (in any thread); call inside a transaction."""
        result = prepared.result
        cur = self.conn.cursor()
        if prepared.staged:
            self._exec(cur, "plan_shared", PLAN_SHARED, PLAN_LOCK)
            with self._timed("copy_stage"), cur.copy(COPY_STAGE) as cp:
                cp.write(prepared.data)
            self._merge(cur, result, prepared)
        if result.dead_letters:
            result.dead_letters = self.store_dead_letters(result.dead_letters)
        if commit_offsets and result.offsets:
            with self._timed("offsets"):
                self.store_offsets(result.offsets)
        return result

    def store_dead_letters(self, rows: list[DeadLetterRow]) -> list[DeadLetterRow]:
        """Insert dead-letter rows; return those not stored before (replays are not news)."""
        fresh = []
        cur = self.conn.cursor()
        for d in rows:  # rare: one round trip each keeps replays uncounted
            cur.execute(DEAD_LETTER_ROW, (
                d.dedup_key, d.site_id, d.source, d.topic, d.partition, d.offset, d.reason,
                reason_class(d.reason), d.payload, d.occurred_at))
            if cur.rowcount:
                fresh.append(d)
        return fresh

    def store_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self.conn.cursor().executemany(
            OFFSETS, [(self.group_id, t, p, o) for (t, p), o in sorted(offsets.items())])

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        """Add the block's seconds to ``timings[name]`` when a benchmark asks for timings."""
        if self.timings is None:
            yield
            return
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time.perf_counter() - t

    def _exec(self, cur: psycopg.Cursor, name: str, sql: str,
              params: dict[str, Any] | tuple[Any, ...] | None = None) -> None:
        with self._timed(name):
            cur.execute(sql, params)

    def _copy_new(self, cur: psycopg.Cursor, prepared: Prepared) -> bool:
        """COPY the batch's audit rows, page revisions and page checks, assuming none is stored
        yet; False (and nothing written) if one is. A check's key holds its event id, so only a
        replay could repeat one, and its audit row refuses it first."""
        try:
            # A savepoint: a conflict undoes only these COPYs.
            with self._timed("copy_new"), self.conn.transaction():
                with cur.copy(AUDIT.copy) as cp:
                    cp.write(prepared.audit)
                if prepared.staged_types["PageScanned"]:
                    with cur.copy(REVISIONS.copy) as cp:
                        cp.write(prepared.revisions)
                if prepared.staged_types["PageChecked"] > prepared.legacy["PageChecked"]:
                    with cur.copy(CHECKS.copy) as cp:
                        cp.write(prepared.checks)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    def _merge(self, cur: psycopg.Cursor, result: BatchResult, prepared: Prepared) -> None:
        if self.copy_first and self._copy_new(cur, prepared):
            result.applied.update(prepared.staged_types)  # all new: what was staged applies
        else:
            result.path = "dedup"
            self._dedup(cur, result, prepared)
        fresh = sum(result.applied.values())
        result.duplicates += prepared.staged - fresh
        if not fresh:
            return
        if prepared.legacy["PageChecked"]:  # rare: checks of version 1, placed by SQL
            with self._timed("copy_legacy_checks"), cur.copy(COPY_STAGE_CHECKS) as cp:
                cp.write(prepared.legacy_checks)
        with self._timed("copy_touched_files"), cur.copy(COPY_TOUCHED_FILES) as cp:
            cp.write(prepared.files)
        d = self.site_defaults
        self._exec(cur, "new_sites", NEW_SITES, {
            "tz": d.timezone, "ws": d.work_start, "we": d.work_end, "wd": list(d.workdays),
            "sites": prepared.sites})
        result.sites_created = [r[0] for r in cur.fetchall()]
        copied, legacy = result.path == "copy", bool(prepared.legacy)
        if self.timings is None:
            cur.execute(MERGE_SCRIPTS[(copied, legacy)], prepare=False)
        else:
            for step in merge_steps(copied=copied, legacy=legacy):
                self._exec(cur, step.name, step.sql)
        if result.sites_created:
            log.warning("sites auto-created (not in a campaign plan)",
                        extra={"sites": result.sites_created[:20],
                               "count": len(result.sites_created)})

    def _dedup(self, cur: psycopg.Cursor, result: BatchResult, prepared: Prepared) -> None:
        """Drop the staged events already in ``audit_log`` and write the audit rows of the
        rest; stage the batch's checks for the merge that keeps those of the rest."""
        self._exec(cur, "dedup_applied", DEDUP_APPLIED)
        dropped = cur.rowcount  # read before the COPY below sets its own
        if prepared.staged_types["PageChecked"] > prepared.legacy["PageChecked"]:
            with self._timed("copy_stage_checks"), cur.copy(COPY_STAGE_CHECKS) as cp:
                cp.write(prepared.checks)
        if dropped:
            # Replays were dropped: the batch's picks may have named a dropped row.
            self._exec(cur, "repick", REPICK)
            self._exec(cur, "count_staged", COUNT_STAGED)
            result.applied.update({t: n for t, n in cur.fetchall()})
        else:  # nothing dropped: what was staged is what applies (one round trip less)
            result.applied.update(prepared.staged_types)


def stored_offsets(conn: psycopg.Connection, group_id: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        "SELECT topic, part, next_offset FROM consumer_offsets WHERE group_id = %s",
        (group_id,)).fetchall()
    return {(t, p): o for t, p, o in rows}
