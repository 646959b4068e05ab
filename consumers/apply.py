"""Apply a batch of events to PostgreSQL in one transaction, with exactly-once effect.

How a batch is written (all inside the caller's transaction):
1. every record is parsed; valid events are COPYed into a temporary staging table, invalid
   ones become dead-letter rows (keyed by a stable id derived from topic/partition/offset);
2. duplicates inside the batch are dropped while parsing; the batch's audit rows (the audit row
   of an applied event doubles as its dedup record), its new page revisions and its page checks
   (a history: every check is kept) are COPYed straight into ``audit_log``, ``page_revisions``
   and ``page_checks`` under a savepoint. Almost every batch is all new, and COPY is the
   cheapest way in. When a row is already there (a replay, or another event for a stored page
   revision), the savepoint is rolled back and the batch takes the careful path instead: events
   already in ``audit_log`` are dropped in SQL, revisions are upserted and the checks of the
   events left are inserted;
3. set-based statements merge the rest into the tables. Every merge is commutative (highest
   revision wins, then the latest ``occurred_at``, then the larger ``event_id``; first-seen
   times take the least), and derived columns (file state, page counts, daily progress) are
   recomputed from the stored facts for the keys the batch touched, so any order of arrival,
   replays and duplicates end in the same rows as an orderly stream.
"""

from __future__ import annotations

import json
import logging
import operator
import re
import time as time_mod
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from typing import Any

import psycopg
import pydantic_core
from psycopg import postgres, pq
from psycopg._copy_base import BinaryFormatter  # private, pinned by test_copy_binary_*
from psycopg.adapt import AdaptersMap, Dumper, Transformer

from consumers.db import PLAN_LOCK, SITE_DAYS_LOCK_CLASS
from consumers.fast_events import FastPageScanned, PageEvent, decode_page_event
from sohoa.events import (
    DeadLetter,
    Event,
    FileEvent,
    InvalidEvent,
    PageChecked,
    PageRemoved,
    PageScanned,
    parse_event,
    stable_event_id,
)

log = logging.getLogger(__name__)

CONSUMER_SOURCE = "consumer"


@dataclass(frozen=True)
class Record:
    """One Kafka record as the applier needs it (kafka-python's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None


@dataclass
class DeadLetterRow:
    dedup_key: str
    site_id: str
    source: str
    topic: str | None
    partition: int | None
    offset: int | None
    reason: str
    payload: str
    occurred_at: datetime

    def to_event(self) -> DeadLetter:
        return DeadLetter(event_id=self.dedup_key, site_id=self.site_id[:200] or "unknown",
                          source=self.source, topic=self.topic, partition=self.partition,
                          offset=self.offset, reason=self.reason, payload=self.payload,
                          occurred_at=self.occurred_at)


@dataclass
class BatchResult:
    applied: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    dead_letters: list[DeadLetterRow] = field(default_factory=list)
    sites_created: list[str] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # "copy": the batch was all new and went in by COPY; "dedup": it held a replay (or another
    # event for a stored page revision) and was merged row by row in SQL.
    path: str = "copy"


def reason_class(reason: str) -> str:
    """A short, low-cardinality label for a dead-letter reason (the full text is stored)."""
    r = reason.strip()
    if r.startswith("not JSON") or r.startswith("not a JSON"):
        return "invalid_json"
    if r.startswith("field 'schema"):
        return "unknown_schema"
    m = re.match(r"^([A-Za-z]+): field '([A-Za-z_.0-9]+)'", r)
    if m:
        return f"invalid_{m.group(2).split('.')[0]}"[:40]
    head = re.split(r"[:(\[]", r, maxsplit=1)[0].strip().lower()
    head = re.sub(r"[^a-z0-9]+", "_", head).strip("_")
    return (head or "other")[:40]


def _lenient(value: bytes | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace")[:100_000]


def _site_guess(value: bytes | None) -> str:
    try:
        data = json.loads(value or b"")
        site = data.get("site_id") if isinstance(data, dict) else None
        return site if isinstance(site, str) and site else "unknown"
    except (ValueError, UnicodeDecodeError):
        return "unknown"


# The staging table is partitioned by event type: most merges read one type (`WHERE etype =
# 'X'`, pruned when planned), so each scans its own partition instead of the whole batch. The
# two page types are ~90 % of the events; the nine others share the default partition. Before,
# the ~20 full scans of the batch were ~10 % of the server's time per batch.
STAGE_COLUMNS = ("seq", "event_id", "etype", "site_id", "file_code", "fonds", "page_no",
                 "revision", "sha256", "occurred_at", "topic", "part", "off", "uri", "path",
                 "size_bytes", "media_type", "passed", "names", "doc", "pick_rev", "pick_page",
                 "first_at")

_CREATE_TEMP = """
CREATE TEMP TABLE IF NOT EXISTS stage (
    seq integer NOT NULL, event_id text COLLATE "C" NOT NULL, etype text COLLATE "C" NOT NULL,
    site_id text COLLATE "C" NOT NULL, file_code text COLLATE "C", fonds text, page_no integer,
    revision integer, sha256 text COLLATE "C", occurred_at timestamptz NOT NULL, topic text,
    part integer, off bigint, uri text, path text, size_bytes bigint, media_type text,
    passed boolean, names text[], doc jsonb, pick_rev boolean, pick_page boolean,
    first_at timestamptz
) PARTITION BY LIST (etype) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_scanned PARTITION OF stage
    FOR VALUES IN ('PageScanned') ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_checked PARTITION OF stage
    FOR VALUES IN ('PageChecked') ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_other PARTITION OF stage DEFAULT ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS stage_checks (LIKE page_checks) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS touched_days (site_id text COLLATE "C" NOT NULL,
    day date NOT NULL) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS known_pages (site_id text COLLATE "C" NOT NULL,
    file_code text COLLATE "C" NOT NULL, page_no integer NOT NULL) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS touched_files (site_id text COLLATE "C" NOT NULL,
    file_code text COLLATE "C" NOT NULL, pages_changed boolean NOT NULL,
    fonds text[] NOT NULL, opened boolean NOT NULL, first_at timestamptz NOT NULL,
    PRIMARY KEY (site_id, file_code))
    ON COMMIT DELETE ROWS;
"""

# --- the statements, in order ------------------------------------------------------------
# Integers inside JSON documents are read through `numeric`: the contract (pydantic, lax) reads
# 4.0 and 4e0 as 4, and a plain integer cast would refuse them (and the event with them).

# The batch's first statement, taken before it writes a site or a page, so a plan import
# (which holds it exclusive) never waits for a row this batch holds while the batch waits for it.
_PLAN_SHARED = "SELECT pg_advisory_xact_lock_shared(%s, %s)"

_DEDUP_APPLIED = """
WITH ins AS (
    INSERT INTO audit_log (event_id, action, site_id, file_code, page_no, occurred_at,
                           topic, part, "offset")
    SELECT event_id, etype, site_id, file_code, page_no, occurred_at, topic, part, off
    FROM stage
    ON CONFLICT (event_id, action) DO NOTHING
    RETURNING event_id
)
DELETE FROM stage s WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.event_id = s.event_id)
"""

# The rule of `_pick_pages`, for the rows left after dropping already-applied events.
_REPICK = """
UPDATE stage s SET pick_rev = (x.rn_rev = 1), pick_page = (x.rn_page = 1), first_at = x.first_at
FROM (
    SELECT seq,
           row_number() OVER (PARTITION BY site_id, file_code, page_no, revision
                              ORDER BY occurred_at DESC, sha256 DESC, seq DESC) AS rn_rev,
           row_number() OVER (PARTITION BY site_id, file_code, page_no
                              ORDER BY revision DESC, occurred_at DESC, sha256 DESC, seq DESC)
               AS rn_page,
           min(occurred_at) OVER (PARTITION BY site_id, file_code, page_no) AS first_at
    FROM stage WHERE etype = 'PageScanned'
) x
WHERE s.seq = x.seq
"""

_NEW_SITES = """
WITH new AS (
    INSERT INTO sites (site_id, auto_created, timezone, work_start, work_end, workdays)
    SELECT site_id, true, %(tz)s, %(ws)s, %(we)s, %(wd)s
    FROM unnest(%(sites)s::text[]) AS d(site_id)
    ON CONFLICT (site_id) DO NOTHING
    RETURNING site_id
), audit AS (
    INSERT INTO audit_log (event_id, action, site_id, detail)
    SELECT (SELECT min(event_id) FROM stage s WHERE s.site_id = new.site_id),
           'site_auto_created', new.site_id,
           'site not in any campaign plan: created without a target'
    FROM new
    ON CONFLICT DO NOTHING
)
SELECT site_id FROM new
"""

# `touched_files` holds the batch's files and their merged facts (COPYed, see
# `touched_files()`); each fonds the batch names is kept, so the greatest is taken in the
# database's collation, as GREATEST does across batches.
_UPSERT_FILES = """
INSERT INTO files (site_id, file_code, fonds, opened, first_seen_at)
SELECT site_id, file_code, COALESCE((SELECT max(f) FROM unnest(fonds) f), ''), opened, first_at
FROM touched_files
ON CONFLICT (site_id, file_code) DO UPDATE SET
    fonds = GREATEST(files.fonds, excluded.fonds),
    opened = files.opened OR excluded.opened,
    first_seen_at = LEAST(files.first_seen_at, excluded.first_seen_at)
"""

# An event about a file that no PageScanned/FileManifest has opened yet is kept (it may simply
# be early), and the audit log says so.
_AUDIT_UNOPENED = """
INSERT INTO audit_log (event_id, action, site_id, file_code, page_no, detail, occurred_at)
SELECT s.event_id, 'file_not_opened', s.site_id, s.file_code, s.page_no,
       s.etype || ' for a file with no scanned page yet: kept, counted when pages arrive',
       s.occurred_at
FROM stage s JOIN files f USING (site_id, file_code)
WHERE NOT f.opened AND s.etype NOT IN ('PageScanned', 'FileManifest')
ON CONFLICT DO NOTHING
"""

# The days the verdicts of the batch's files sit on (read before the batch and after it).
_VERDICT_DAYS = """
SELECT f.site_id, (f.verdict_at AT TIME ZONE st.timezone)::date
FROM files f JOIN touched_files t USING (site_id, file_code) JOIN sites st USING (site_id)
WHERE f.verdict_at IS NOT NULL
"""

# Days whose counts may change: the days pages and verdicts sit on before this batch… The
# probe that finds a page's day also says it is stored: `known_pages` keeps those (few) keys,
# so the batch's new pages are inserted without a second probe (see `_INSERT_PAGES`). A
# scanned page is probed by its one `pick_page` row, with no sort of the batch; a page the
# batch also removes is probed twice, and its key and day listed twice, which changes nothing
# that reads them.
_DAYS_BEFORE = """
WITH stored AS (
    SELECT site_id, file_code, page_no, day FROM (
        SELECT k.site_id, k.file_code, k.page_no,
               (SELECT p.scan_day FROM pages p WHERE p.site_id = k.site_id
                   AND p.file_code = k.file_code AND p.page_no = k.page_no) AS day
        FROM (SELECT site_id, file_code, page_no FROM stage
              WHERE etype = 'PageScanned' AND pick_page
              UNION ALL
              SELECT DISTINCT site_id, file_code, page_no FROM stage
              WHERE etype = 'PageRemoved') k
    ) x WHERE day IS NOT NULL
), known AS (
    INSERT INTO known_pages (site_id, file_code, page_no)
    SELECT site_id, file_code, page_no FROM stored
)
INSERT INTO touched_days (site_id, day)
SELECT site_id, day FROM stored
UNION
""" + _VERDICT_DAYS

_PAGE_REVISIONS = """
INSERT INTO page_revisions (site_id, file_code, page_no, revision, sha256, uri, path,
                            size_bytes, media_type, scanned_at, event_id)
SELECT site_id, file_code, page_no, revision, sha256, uri, path, size_bytes, media_type,
       occurred_at, event_id
FROM stage WHERE etype = 'PageScanned' AND pick_rev
ON CONFLICT (site_id, file_code, page_no, revision) DO UPDATE SET
    sha256 = excluded.sha256, uri = excluded.uri, path = excluded.path,
    size_bytes = excluded.size_bytes, media_type = excluded.media_type,
    scanned_at = excluded.scanned_at, event_id = excluded.event_id
WHERE (excluded.scanned_at, excluded.sha256) > (page_revisions.scanned_at, page_revisions.sha256)
"""

_PAGE_REMOVALS = """
INSERT INTO page_removals (site_id, file_code, page_no, sha256, removed_at, event_id)
SELECT DISTINCT ON (site_id, file_code, page_no, sha256)
       site_id, file_code, page_no, sha256, occurred_at, event_id
FROM stage WHERE etype = 'PageRemoved'
ORDER BY site_id, file_code, page_no, sha256, occurred_at DESC, event_id DESC
ON CONFLICT (site_id, file_code, page_no, sha256) DO UPDATE SET
    removed_at = excluded.removed_at, event_id = excluded.event_id
WHERE (excluded.removed_at, excluded.event_id) > (page_removals.removed_at, page_removals.event_id)
"""

# The check of a page revision is its latest, by checked_at and then event_id: `page_checks`
# keeps every check (migration 004), and its key's order makes this one index probe.
_LATEST_CHECK = """(SELECT k.passed FROM page_checks k
            WHERE k.site_id = {t}.site_id AND k.file_code = {t}.file_code
              AND k.page_no = {t}.page_no AND k.revision = {t}.revision
            ORDER BY k.checked_at DESC, k.event_id DESC LIMIT 1)"""

# A page the batch scans: its winning scan (`pick_page`), on the day of its first scan, with
# the check of its revision if one is stored (checks may come before their scan). The day each
# page sits on afterwards is a day whose count may have changed (see `_DAYS_AFTER`).
_PAGE_ROWS = """
WITH written AS (
    INSERT INTO pages (site_id, file_code, page_no, revision, sha256, uri, path, size_bytes,
                       media_type, scanned_at, first_scanned_at, scan_day, check_passed)
    SELECT c.site_id, c.file_code, c.page_no, c.revision, c.sha256, c.uri, c.path,
           c.size_bytes, c.media_type, c.occurred_at, c.first_at,
           (c.first_at AT TIME ZONE st.timezone)::date,
           {latest}
    FROM stage c JOIN sites st USING (site_id)
    WHERE c.etype = 'PageScanned' AND c.pick_page
      AND {stored} (SELECT 1 FROM known_pages s WHERE s.site_id = c.site_id
                      AND s.file_code = c.file_code AND s.page_no = c.page_no)
    {merge}
    RETURNING site_id, scan_day
)
INSERT INTO touched_days (site_id, day) SELECT DISTINCT site_id, scan_day FROM written
"""

# Pages not stored before the batch (almost all of them): a plain insert, which skips the
# upsert's own probe for a conflict. Should another writer store one of them in the meantime
# (one consumer per partition makes that a rebalance race), the unique key refuses the batch
# and the consumer applies it record by record, when those pages are known.
_INSERT_PAGES = _PAGE_ROWS.format(stored="NOT EXISTS", merge="",
                                  latest=_LATEST_CHECK.format(t="c"))

# Pages stored before the batch (a rescan, a late event): merged with what is stored.
_UPSERT_PAGES = _PAGE_ROWS.format(stored="EXISTS", latest=_LATEST_CHECK.format(t="c"), merge="""\
ON CONFLICT (site_id, file_code, page_no) DO UPDATE SET
    revision = CASE WHEN n.newer THEN excluded.revision ELSE pages.revision END,
    check_passed = CASE WHEN n.newer THEN excluded.check_passed ELSE pages.check_passed END,
    sha256 = CASE WHEN n.newer THEN excluded.sha256 ELSE pages.sha256 END,
    uri = CASE WHEN n.newer THEN excluded.uri ELSE pages.uri END,
    path = CASE WHEN n.newer THEN excluded.path ELSE pages.path END,
    size_bytes = CASE WHEN n.newer THEN excluded.size_bytes ELSE pages.size_bytes END,
    media_type = CASE WHEN n.newer THEN excluded.media_type ELSE pages.media_type END,
    scanned_at = CASE WHEN n.newer THEN excluded.scanned_at ELSE pages.scanned_at END,
    first_scanned_at = LEAST(pages.first_scanned_at, excluded.first_scanned_at),
    scan_day = CASE WHEN excluded.first_scanned_at < pages.first_scanned_at
                    THEN excluded.scan_day ELSE pages.scan_day END""")
# (`n.newer` is spelled out below: ON CONFLICT cannot join, so the comparison is inlined.)
_NEWER = ("((excluded.revision, excluded.scanned_at, excluded.sha256)"
          " > (pages.revision, pages.scanned_at, pages.sha256))")
_UPSERT_PAGES = _UPSERT_PAGES.replace("n.newer", _NEWER)

# Only pages that a removal may concern: those removed in this batch, and those scanned in it
# that have any removal on record (a new revision must clear or keep an earlier removal).
_PAGES_REMOVED = """
UPDATE pages p SET removed_at = (
    SELECT max(r.removed_at) FROM page_removals r
    WHERE r.site_id = p.site_id AND r.file_code = p.file_code AND r.page_no = p.page_no
      AND r.sha256 = p.sha256 AND r.removed_at >= p.scanned_at)
FROM (SELECT site_id, file_code, page_no FROM stage WHERE etype = 'PageRemoved'
      UNION
      SELECT s.site_id, s.file_code, s.page_no FROM stage s
      WHERE s.etype = 'PageScanned' AND EXISTS (
          SELECT 1 FROM page_removals r WHERE r.site_id = s.site_id
             AND r.file_code = s.file_code AND r.page_no = s.page_no)) k
WHERE p.site_id = k.site_id AND p.file_code = k.file_code AND p.page_no = k.page_no
"""

# The careful path's checks: those of the events left once replays were dropped (the COPY
# path writes the batch's checks in `_copy_new`). `stage_checks` has the columns of
# `page_checks`, in its order.
_PAGE_CHECKS = """
INSERT INTO page_checks
SELECT c.* FROM stage_checks c
WHERE EXISTS (SELECT 1 FROM stage s WHERE s.etype = 'PageChecked' AND s.event_id = c.event_id)
"""

# A page the batch checked takes the latest check of its revision, stored before or now. Pages
# are probed first and the checks only for those found: a check often comes in the batch of
# its page's scan, and then the page's insert reads it (`_INSERT_PAGES`, after this).
_CHECKS_ONTO_PAGES = """
UPDATE pages p SET check_passed = {latest}
FROM stage c
WHERE c.etype = 'PageChecked' AND p.site_id = c.site_id AND p.file_code = c.file_code
  AND p.page_no = c.page_no AND p.revision = c.revision
  AND p.check_passed IS DISTINCT FROM {latest}
""".format(latest=_LATEST_CHECK.format(t="p"))

# The winner of each revision is picked first (the sort carries the document unread), then
# jsonb_to_record reads each (often TOASTed, page-list sized) document once: every `doc->`
# would fetch and decompress it again, several times a row.
_ASSEMBLIES = """
INSERT INTO file_assemblies (site_id, file_code, revision, trigger, pages, page_list, gaps,
                             duplicate_page_nos, duplicate_content, expected_pages,
                             count_mismatch, classification, assembled_at, event_id)
SELECT s.site_id, s.file_code, s.revision, j.trigger, jsonb_array_length(j.pages), j.pages,
       ARRAY(SELECT x::numeric::integer FROM jsonb_array_elements_text(j.gaps) x),
       ARRAY(SELECT x::numeric::integer FROM jsonb_array_elements_text(j.duplicate_page_nos) x),
       COALESCE(j.duplicate_content, '[]'::jsonb), j.expected_pages::integer,
       COALESCE(j.count_mismatch, false), j.classification, s.occurred_at, s.event_id
FROM (SELECT DISTINCT ON (site_id, file_code, revision)
             site_id, file_code, revision, occurred_at, event_id, doc
      FROM stage WHERE etype = 'FileAssembled'
      ORDER BY site_id, file_code, revision, occurred_at DESC, event_id DESC) s
CROSS JOIN LATERAL jsonb_to_record(s.doc) AS j(
    trigger text, pages jsonb, gaps jsonb, duplicate_page_nos jsonb, duplicate_content jsonb,
    expected_pages numeric, count_mismatch boolean, classification text)
ON CONFLICT (site_id, file_code, revision) DO UPDATE SET
    trigger = excluded.trigger, pages = excluded.pages, page_list = excluded.page_list,
    gaps = excluded.gaps, duplicate_page_nos = excluded.duplicate_page_nos,
    duplicate_content = excluded.duplicate_content, expected_pages = excluded.expected_pages,
    count_mismatch = excluded.count_mismatch, classification = excluded.classification,
    assembled_at = excluded.assembled_at, event_id = excluded.event_id
WHERE (excluded.assembled_at, excluded.event_id)
    > (file_assemblies.assembled_at, file_assemblies.event_id)
"""

# A retried OCR of the same revision: a completion beats a failure, then the latest wins.
_OCR = """
INSERT INTO ocr_results (site_id, file_code, revision, status, output_uri, output_sha256,
                         text_uri, pages, mean_confidence, seconds, reason, attempts,
                         occurred_at, event_id)
SELECT DISTINCT ON (site_id, file_code, revision)
       site_id, file_code, revision,
       CASE etype WHEN 'OcrCompleted' THEN 'completed' ELSE 'failed' END,
       doc->>'output_uri', doc->>'output_sha256', doc->>'text_uri', doc->'pages',
       (SELECT avg((x->>'mean_confidence')::double precision)
          FROM jsonb_array_elements(COALESCE(doc->'pages', '[]'::jsonb)) x),
       (doc->>'seconds')::double precision, doc->>'reason', (doc->>'attempts')::numeric::integer,
       occurred_at, event_id
FROM stage WHERE etype IN ('OcrCompleted', 'OcrFailed')
ORDER BY site_id, file_code, revision, (etype = 'OcrCompleted') DESC, occurred_at DESC,
         event_id DESC
ON CONFLICT (site_id, file_code, revision) DO UPDATE SET
    status = excluded.status, output_uri = excluded.output_uri,
    output_sha256 = excluded.output_sha256, text_uri = excluded.text_uri,
    pages = excluded.pages, mean_confidence = excluded.mean_confidence,
    seconds = excluded.seconds, reason = excluded.reason, attempts = excluded.attempts,
    occurred_at = excluded.occurred_at, event_id = excluded.event_id
WHERE (excluded.status = 'completed', excluded.occurred_at, excluded.event_id)
    > (ocr_results.status = 'completed', ocr_results.occurred_at, ocr_results.event_id)
"""

_VERDICTS = """
INSERT INTO verdicts (event_id, site_id, file_code, revision, verdict, reasons, pages_total,
                      pages_accepted, occurred_at)
SELECT event_id, site_id, file_code, revision, doc->>'verdict',
       COALESCE(doc->'reasons', '[]'::jsonb), COALESCE((doc->>'pages_total')::numeric::integer, 0),
       COALESCE((doc->>'pages_accepted')::numeric::integer, 0), occurred_at
FROM stage WHERE etype = 'FileVerdict'
ON CONFLICT (event_id) DO NOTHING
"""

_MANIFEST = """
UPDATE files f SET
    title = m.doc->>'title', expected_pages = (m.doc->>'expected_pages')::numeric::integer,
    classification = m.doc->>'classification', priority = (m.doc->>'priority')::numeric::smallint,
    start_date = m.doc->>'start_date', end_date = m.doc->>'end_date',
    metadata = COALESCE(m.doc->'metadata', '{}'::jsonb), manifest_at = m.occurred_at
FROM (SELECT DISTINCT ON (site_id, file_code) * FROM stage WHERE etype = 'FileManifest'
      ORDER BY site_id, file_code, occurred_at DESC, event_id DESC) m
WHERE f.site_id = m.site_id AND f.file_code = m.file_code
  AND (f.manifest_at IS NULL OR m.occurred_at > f.manifest_at)
"""

# The earliest close counts (a marker after an idle close does not move the time back).
_CLOSED = """
UPDATE files f SET closed_at = c.occurred_at, closed_reason = c.doc->>'reason'
FROM (SELECT DISTINCT ON (site_id, file_code) * FROM stage WHERE etype = 'FileClosed'
      ORDER BY site_id, file_code, occurred_at, event_id) c
WHERE f.site_id = c.site_id AND f.file_code = c.file_code
  AND (f.closed_at IS NULL OR c.occurred_at < f.closed_at)
"""

_HEARTBEATS = """
INSERT INTO site_heartbeats (site_id, last_heartbeat_at, agent_version, outbox_depth,
                             oldest_unsent_age_s, disk_free_bytes, roots, event_id)
SELECT DISTINCT ON (site_id) site_id, occurred_at, doc->>'agent_version',
       (doc->>'outbox_depth')::numeric::integer, COALESCE((doc->>'oldest_unsent_age_s')::float8, 0),
       COALESCE((doc->>'disk_free_bytes')::numeric::bigint, 0), COALESCE(doc->'roots', '[]'::jsonb),
       event_id
FROM stage WHERE etype = 'SiteHeartbeat'
ORDER BY site_id, occurred_at DESC, event_id DESC
ON CONFLICT (site_id) DO UPDATE SET
    last_heartbeat_at = excluded.last_heartbeat_at, agent_version = excluded.agent_version,
    outbox_depth = excluded.outbox_depth, oldest_unsent_age_s = excluded.oldest_unsent_age_s,
    disk_free_bytes = excluded.disk_free_bytes, roots = excluded.roots,
    event_id = excluded.event_id
WHERE (excluded.last_heartbeat_at, excluded.event_id)
    > (site_heartbeats.last_heartbeat_at, site_heartbeats.event_id)
"""

_DEAD_LETTER_EVENTS = """
INSERT INTO dead_letters (dedup_key, site_id, source, topic, part, "offset", reason,
                          reason_class, payload, occurred_at)
SELECT event_id, site_id, doc->>'source', doc->>'topic', (doc->>'partition')::numeric::integer,
       (doc->>'offset')::numeric::bigint, doc->>'reason', path, COALESCE(doc->>'payload', ''),
       occurred_at
FROM stage WHERE etype = 'DeadLetter'
ON CONFLICT (dedup_key) DO NOTHING
"""

# Current assembly, OCR and verdict of every touched file, recomputed from the history tables.
_FILE_CURRENT = """
UPDATE files f SET
    assembled_revision = a.revision, assembled_at = a.assembled_at, assembled_pages = a.pages,
    gaps = a.gaps, count_mismatch = a.count_mismatch,
    ocr_revision = o.revision, ocr_status = o.status, ocr_at = o.occurred_at,
    verdict_revision = v.revision, verdict = v.verdict, verdict_at = v.occurred_at,
    verdict_event_id = v.event_id, pages_total = v.pages_total,
    pages_accepted = v.pages_accepted
FROM touched_files t
LEFT JOIN LATERAL (
    SELECT * FROM file_assemblies x WHERE x.site_id = t.site_id AND x.file_code = t.file_code
    ORDER BY revision DESC, assembled_at DESC, event_id DESC LIMIT 1) a ON true
LEFT JOIN LATERAL (
    SELECT * FROM ocr_results x WHERE x.site_id = t.site_id AND x.file_code = t.file_code
    ORDER BY revision DESC LIMIT 1) o ON true
LEFT JOIN LATERAL (
    SELECT * FROM verdicts x WHERE x.site_id = t.site_id AND x.file_code = t.file_code
    ORDER BY revision DESC, occurred_at DESC, event_id DESC LIMIT 1) v ON true
WHERE f.site_id = t.site_id AND f.file_code = t.file_code
"""

# LATERAL keeps this an index range scan per touched file however large `pages` grows; only
# files whose pages or checks changed are recounted.
_FILE_PAGES = """
UPDATE files f SET pages = a.n, last_page_at = a.last_at, checked_pages = a.checked,
                   qc_failed_pages = a.failed
FROM touched_files t
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE NOT p.removed) AS n,
           max(p.scanned_at) FILTER (WHERE NOT p.removed) AS last_at,
           count(p.check_passed) FILTER (WHERE NOT p.removed) AS checked,
           count(*) FILTER (WHERE NOT p.removed AND NOT p.check_passed) AS failed
    FROM pages p
    WHERE p.site_id = t.site_id AND p.file_code = t.file_code
) a
WHERE f.site_id = t.site_id AND f.file_code = t.file_code AND t.pages_changed
"""

# The state is a function of the stored facts, never of the order they came in: a verdict of
# the current (or a newer) assembly wins, then OCR of it, then page checks, then assembly.
_FILE_STATE = """
UPDATE files f SET state = CASE
    WHEN f.verdict IS NOT NULL AND f.verdict_revision >= COALESCE(f.assembled_revision, 0)
        THEN f.verdict
    WHEN f.ocr_status IS NOT NULL AND f.ocr_revision >= COALESCE(f.assembled_revision, 0)
        THEN CASE f.ocr_status WHEN 'completed' THEN 'ocr_done' ELSE 'ocr_failed' END
    WHEN f.assembled_revision IS NOT NULL AND f.pages > 0 AND f.checked_pages >= f.pages
        THEN 'checked'
    WHEN f.assembled_revision IS NOT NULL THEN 'assembled'
    WHEN f.closed_at IS NOT NULL THEN 'closed'
    ELSE 'scanning' END
FROM touched_files t
WHERE f.site_id = t.site_id AND f.file_code = t.file_code
"""

# …and the days they sit on after it: a scanned page's day is the one its write returned
# (`_PAGE_ROWS`); a removal leaves the page on its day, which `_DAYS_BEFORE` holds; a verdict's
# day is read here, after `_FILE_CURRENT`.
_DAYS_AFTER = """
INSERT INTO touched_days (site_id, day)
""" + _VERDICT_DAYS

# Consumers of one group write their own files but share sites and days: a day's count taken
# while another consumer's pages on that day are written but not committed would miss them,
# and the later commit would overwrite the other's count with it. So each batch locks its
# sites (in one order: no deadlock) until it commits, and counts in the statement after the
# lock, whose snapshot includes every batch that held it before (see consumers.db).
_LOCK_SITE_DAYS = f"""
SELECT count(pg_advisory_xact_lock({SITE_DAYS_LOCK_CLASS}, q.k))
FROM (SELECT DISTINCT hashtext(site_id) AS k FROM touched_days ORDER BY 1) q
"""

_DAILY = """
INSERT INTO daily_progress AS d (site_id, day, pages_scanned, pages_accepted, files_accepted)
SELECT t.site_id, t.day,
       (SELECT count(*) FROM pages p
         WHERE p.site_id = t.site_id AND p.scan_day = t.day AND NOT p.removed),
       COALESCE(acc.pages, 0), COALESCE(acc.files, 0)
FROM (SELECT DISTINCT site_id, day FROM touched_days) t
JOIN sites st ON st.site_id = t.site_id
LEFT JOIN LATERAL (
    SELECT sum(COALESCE(f.pages_accepted, 0)) AS pages, count(*) AS files FROM files f
    WHERE f.site_id = t.site_id AND f.state = 'accepted'
      AND (f.verdict_at AT TIME ZONE st.timezone)::date = t.day) acc ON true
ON CONFLICT (site_id, day) DO UPDATE SET
    pages_scanned = excluded.pages_scanned, pages_accepted = excluded.pages_accepted,
    files_accepted = excluded.files_accepted
"""

# Keep the table canonical: a day with nothing left on it has no row, whatever the history.
_DAILY_PRUNE = """
DELETE FROM daily_progress d USING (SELECT DISTINCT site_id, day FROM touched_days) t
WHERE d.site_id = t.site_id AND d.day = t.day
  AND d.pages_scanned = 0 AND d.pages_accepted = 0 AND d.files_accepted = 0
"""

_OFFSETS = """
INSERT INTO consumer_offsets (group_id, topic, part, next_offset, updated_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (group_id, topic, part) DO UPDATE SET
    next_offset = excluded.next_offset, updated_at = excluded.updated_at
"""

_DEAD_LETTER_ROW = """
INSERT INTO dead_letters (dedup_key, site_id, source, topic, part, "offset", reason,
                          reason_class, payload, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (dedup_key) DO NOTHING
"""


_MERGE_STEPS = ("_UPSERT_FILES", "_AUDIT_UNOPENED", "_DAYS_BEFORE",
                "_PAGE_REVISIONS", "_PAGE_REMOVALS", "_PAGE_CHECKS", "_CHECKS_ONTO_PAGES",
                "_INSERT_PAGES",
                "_UPSERT_PAGES", "_PAGES_REMOVED", "_ASSEMBLIES", "_OCR", "_VERDICTS", "_MANIFEST",
                "_CLOSED", "_HEARTBEATS", "_DEAD_LETTER_EVENTS", "_FILE_CURRENT", "_FILE_PAGES",
                "_FILE_STATE", "_DAYS_AFTER", "_LOCK_SITE_DAYS", "_DAILY", "_DAILY_PRUNE")
_STATEMENTS: dict[str, str] = {name: globals()[name] for name in _MERGE_STEPS}
# The merges take no parameters, so they travel as one simple-query message: one round trip per
# batch instead of one per statement (on a busy host each round trip waits for the scheduler
# twice). Same statements, same order, same transaction; the first error aborts the rest.
_MERGE_SCRIPT = ";\n".join(_STATEMENTS[name].strip() for name in _MERGE_STEPS)

# The same merges less those of the rows a batch that is all new COPYs (see `_copy_new`).
_COPIED_STEPS = frozenset({"_PAGE_REVISIONS", "_PAGE_CHECKS"})
_MERGE_SCRIPT_AFTER_COPY = ";\n".join(_STATEMENTS[name].strip() for name in _MERGE_STEPS
                                      if name not in _COPIED_STEPS)

_COPY_STAGE = f"COPY stage ({', '.join(STAGE_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
# What `touched_files()` returns for the table of that name, and each column's type.
_TOUCHED_FILES_COLUMNS = (("site_id", "text"), ("file_code", "text"), ("pages_changed", "bool"),
                          ("fonds", "text[]"), ("opened", "bool"), ("first_at", "timestamptz"))
_COPY_TOUCHED_FILES = (f"COPY touched_files ({', '.join(c for c, _ in _TOUCHED_FILES_COLUMNS)})"
                       " FROM STDIN (FORMAT BINARY)")
# What `_DEDUP_APPLIED` and `_PAGE_REVISIONS` insert, as COPY: each target column and the
# staging column it comes from (types and positions follow from the staging table's).
_AUDIT_COLUMNS = (("event_id", "event_id"), ("action", "etype"), ("site_id", "site_id"),
                  ("file_code", "file_code"), ("page_no", "page_no"),
                  ("occurred_at", "occurred_at"), ("topic", "topic"), ("part", "part"),
                  ('"offset"', "off"))
_REVISION_COLUMNS = (("site_id", "site_id"), ("file_code", "file_code"), ("page_no", "page_no"),
                     ("revision", "revision"), ("sha256", "sha256"), ("uri", "uri"),
                     ("path", "path"), ("size_bytes", "size_bytes"),
                     ("media_type", "media_type"), ("scanned_at", "occurred_at"),
                     ("event_id", "event_id"))
# A check's row in `page_checks` (and `stage_checks`), from its staged row.
_CHECK_COLUMNS = (("site_id", "site_id"), ("file_code", "file_code"), ("page_no", "page_no"),
                  ("revision", "revision"), ("sha256", "sha256"), ("passed", "passed"),
                  ("failed", "names"), ("checks", "doc"), ("checked_at", "occurred_at"),
                  ("event_id", "event_id"))
_COPY_AUDIT = (f"COPY audit_log ({', '.join(c for c, _ in _AUDIT_COLUMNS)}) "
               "FROM STDIN (FORMAT BINARY)")
_COPY_REVISIONS = (f"COPY page_revisions ({', '.join(c for c, _ in _REVISION_COLUMNS)}) "
                   "FROM STDIN (FORMAT BINARY)")
_CHECK_LIST = ", ".join(c for c, _ in _CHECK_COLUMNS)
_COPY_CHECKS = f"COPY page_checks ({_CHECK_LIST}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE_CHECKS = f"COPY stage_checks ({_CHECK_LIST}) FROM STDIN (FORMAT BINARY)"


@dataclass
class Prepared:
    """A batch parsed and shaped for COPY: pure CPU work, no database, safe in any thread or
    process (:func:`prepare_wire` runs it in the consumer's parse process)."""

    data: bytes  # the staging rows in COPY binary format (a check's document aside)
    staged: int  # how many rows ``data`` holds
    audit: bytes  # their audit rows, COPY binary (see _AUDIT_COLUMNS)
    revisions: bytes  # the page revisions they win, COPY binary (see _REVISION_COLUMNS)
    checks: bytes  # their page checks, COPY binary (see _CHECK_COLUMNS)
    files: bytes  # the files they touch, COPY binary for `touched_files` (see touched_files)
    sites: list[str]  # the sites they name (dead letters aside)
    staged_types: Counter[str]  # rows per event type
    result: BatchResult
    records: list[Record]
    cpu_s: float = 0.0  # CPU seconds the preparation took, where it ran


def stage_rows(records: list[Record]) -> tuple[list[tuple], BatchResult]:
    """Parse and validate every record: the staging rows (see STAGE_COLUMNS) and the batch's
    dead letters, in-batch duplicates and next offsets."""
    result = BatchResult()
    rows: list[tuple] = []
    seen: set[str] = set()
    for seq, rec in enumerate(records):
        key = (rec.topic, rec.partition)
        result.offsets[key] = max(result.offsets.get(key, -1), rec.offset + 1)
        try:
            row = _staged(seq, rec)
        except InvalidEvent as exc:
            result.dead_letters.append(dead_letter_for(rec, exc.reason))
            continue
        if row[1] in seen:  # the same fact twice in one batch (by event_id): the first counts
            result.duplicates += 1
            continue
        seen.add(row[1])
        rows.append(row)
    return _pick_pages(rows), result


def _staged(seq: int, rec: Record) -> tuple:
    """The staging row of one record; InvalidEvent if the contract rejects it."""
    if rec.value is None:
        raise InvalidEvent("empty record (tombstone)", b"")
    # The page events (~90 %) by the fast decoder; what it does not take, pydantic judges
    # (from the bytes: parse_event validates our own wire format without a json.loads).
    page = decode_page_event(rec.value)
    if page is not None:
        return _page_row(seq, page, rec)
    return _row(seq, parse_event(rec.value), rec)


class _JsonbTextDumper(Dumper):
    """A JSON document already in text (as received) to binary jsonb: version 1, then the text.
    The server parses it exactly as it would the text format's; psycopg's own jsonb dumper
    would serialise a ``str`` as a JSON string instead."""

    format = pq.Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: str) -> bytes:
        return b"\x01" + obj.encode()


class _JsonTextDumper(Dumper):
    """A JSON document already in text to binary json, which is the text itself (the server
    checks its syntax and stores it as it came)."""

    format = pq.Format.BINARY
    oid = postgres.types["json"].oid

    def dump(self, obj: str) -> bytes:
        return obj.encode()


_BINARY_ADAPTERS = AdaptersMap(postgres.adapters)
_BINARY_ADAPTERS.register_dumper(None, _JsonbTextDumper)  # by oid only: for the stage's `doc`
_BINARY_ADAPTERS.register_dumper(None, _JsonTextDumper)  # and for `page_checks.checks`
_STAGE_TYPES = ("int4", "text", "text", "text", "text", "text", "int4", "int4", "text",
                "timestamptz", "text", "int4", "int8", "text", "text", "int8", "text", "bool",
                "text[]", "jsonb", "bool", "bool", "timestamptz")


def _oids(types: tuple[str, ...]) -> list[int]:
    return [postgres.types[t[:-2]].array_oid if t.endswith("[]") else postgres.types[t].oid
            for t in types]


_STAGE_OIDS = _oids(_STAGE_TYPES)


def _from_stage(columns: tuple[tuple[str, str], ...]) -> tuple[operator.itemgetter, list[int]]:
    """Where each of ``columns`` sits in a staged row, and its type's oid."""
    at = [STAGE_COLUMNS.index(src) for _, src in columns]
    return operator.itemgetter(*at), [_STAGE_OIDS[i] for i in at]


_AUDIT_PICK, _AUDIT_OIDS = _from_stage(_AUDIT_COLUMNS)
_TOUCHED_FILES_OIDS = _oids(tuple(t for _, t in _TOUCHED_FILES_COLUMNS))
_REVISION_PICK, _REVISION_OIDS = _from_stage(_REVISION_COLUMNS)
_REVISION_KEY = operator.itemgetter(0, 1, 2, 3)  # site_id, file_code, page_no, revision
_CHECK_PICK, _STAGED_CHECK_OIDS = _from_stage(_CHECK_COLUMNS)
_CHECK_OIDS = [postgres.types["json"].oid if c == "checks" else oid  # json there, see 004
               for (c, _), oid in zip(_CHECK_COLUMNS, _STAGED_CHECK_OIDS, strict=True)]
_CHECK_KEY = operator.itemgetter(0, 1, 2, 3, 8, 9)  # the key of page_checks


class _Context:
    adapters = _BINARY_ADAPTERS
    connection = None


def _binary(rows: Iterable[tuple], oids: list[int]) -> bytes:
    tx = Transformer(_Context())  # type: ignore[arg-type]
    tx.set_dumper_types(oids, pq.Format.BINARY)
    fmt = BinaryFormatter(tx)
    buf = bytearray()
    for row in rows:
        buf += fmt.write_row(row)
    buf += fmt.end()
    return bytes(buf)


def copy_binary(rows: Iterable[tuple]) -> bytes:
    """``rows`` in COPY binary format, typed as the staging table's columns. Against the text
    format the server skips parsing timestamps, integers and arrays from text (~14 % of the
    staging COPY) and the parse process skips formatting them (datetimes were half of it)."""
    return _binary(rows, _STAGE_OIDS)


def copy_audit(rows: list[tuple]) -> bytes:
    """The audit rows of staged ``rows``, COPY binary for ``audit_log``."""
    return _binary(map(_AUDIT_PICK, rows), _AUDIT_OIDS)


def copy_revisions(rows: list[tuple]) -> bytes:
    """The page revisions that staged ``rows`` win (``pick_rev``), COPY binary for
    ``page_revisions``, in key order: consecutive inserts land on neighbouring leaves of the
    primary key (~10 % of this COPY against arrival order)."""
    return _binary(sorted((_REVISION_PICK(r) for r in rows
                           if r[_I_ETYPE] == "PageScanned" and r[_I_PICK_REV]),
                          key=_REVISION_KEY), _REVISION_OIDS)


def copy_checks(rows: list[tuple]) -> bytes:
    """The page checks of staged ``rows``, COPY binary for ``page_checks``, in key order (as
    :func:`copy_revisions`)."""
    return _binary(sorted((_CHECK_PICK(r) for r in rows if r[_I_ETYPE] == "PageChecked"),
                          key=_CHECK_KEY), _CHECK_OIDS)


def _without_check_documents(rows: list[tuple]) -> Iterator[tuple]:
    """The staging rows less what only ``page_checks`` reads (its failed names and document):
    a check is COPYed there whole (:func:`copy_checks`), so its JSON is parsed once, not
    twice."""
    for r in rows:
        yield (*r[:_I_NAMES], None, None, *r[_I_DOC + 1:]) if r[_I_ETYPE] == "PageChecked" else r


def touched_files(rows: list[tuple]) -> list[tuple]:
    """Each file the staged ``rows`` name, with what the batch says of it: whether its pages
    or checks changed, the fonds it names, whether a scan or manifest opened it, and its first
    time. Folded here (where the rows already are) rather than by a GROUP BY over the batch.
    On the dedup path this includes the files of replayed events: their facts are merged
    already, and every merge of a file is idempotent, so merging them again changes nothing."""
    files: dict[tuple[str, str], list] = {}
    for r in rows:
        code = r[_I_FILE]
        if code is None:
            continue
        etype, fonds, at = r[_I_ETYPE], r[_I_FONDS], r[_I_AT]
        f = files.get((r[_I_SITE], code))
        if f is None:
            f = files[(r[_I_SITE], code)] = [False, set(), False, at]
        f[0] = f[0] or etype in _PAGE_TYPES
        if fonds is not None:
            f[1].add(fonds)
        f[2] = f[2] or etype in _OPENING_TYPES
        if at < f[3]:
            f[3] = at
    return [(site, code, changed, sorted(fonds), opened, first)
            for (site, code), (changed, fonds, opened, first) in files.items()]


def prepare(records: list[Record]) -> Prepared:
    started = time_mod.process_time()
    rows, result = stage_rows(records)
    sites = sorted({r[_I_SITE] for r in rows if r[_I_ETYPE] != "DeadLetter"})
    return Prepared(copy_binary(_without_check_documents(rows)), len(rows),
                    copy_audit(rows), copy_revisions(rows), copy_checks(rows),
                    _binary(touched_files(rows), _TOUCHED_FILES_OIDS), sites,
                    Counter(r[_I_ETYPE] for r in rows), result, records,
                    time_mod.process_time() - started)


def prepare_wire(raw: list[tuple[str, int, int, bytes | None, bytes | None]]) -> Prepared:
    """:func:`prepare` for a worker process: records arrive as plain tuples (cheap to pickle)
    and are not sent back (the caller keeps its own)."""
    prepared = prepare([Record(*r) for r in raw])
    prepared.records = []
    return prepared


def wire(records: list[Record]) -> list[tuple[str, int, int, bytes | None, bytes | None]]:
    return [(r.topic, r.partition, r.offset, r.value, r.key) for r in records]


# Positions in a staged row (see STAGE_COLUMNS).
_I_ETYPE, _I_SITE, _I_FILE, _I_FONDS, _I_PAGE, _I_REV, _I_SHA, _I_AT = 2, 3, 4, 5, 6, 7, 8, 9
_PAGE_TYPES = frozenset({"PageScanned", "PageRemoved", "PageChecked"})  # change a file's pages
_OPENING_TYPES = frozenset({"PageScanned", "FileManifest"})  # open a file
_I_PICK_REV = STAGE_COLUMNS.index("pick_rev")
_I_NAMES, _I_DOC = STAGE_COLUMNS.index("names"), STAGE_COLUMNS.index("doc")


def _pick_pages(rows: list[tuple]) -> list[tuple]:
    """Mark, among this batch's PageScanned, the row that wins each revision and each page,
    and each page's first time: the same rule as the upserts, decided here so the database
    does not sort and window every batch. Most pages occur once in a batch: such a row wins
    both and its own time is the first, with no ranking."""
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if r[_I_ETYPE] == "PageScanned":
            key = (r[_I_SITE], r[_I_FILE], r[_I_PAGE])
            g = groups.get(key)
            if g is None:
                groups[key] = [i]
            else:
                g.append(i)
    none3 = (None, None, None)
    if not groups:
        return [r + none3 for r in rows]
    extra: dict[int, tuple] = {}
    for g in groups.values():
        if len(g) == 1:
            i = g[0]
            extra[i] = (True, True, rows[i][_I_AT])
            continue
        page_win = max(g, key=lambda j: (rows[j][_I_REV], rows[j][_I_AT], rows[j][_I_SHA], j))
        rev_win: dict[Any, tuple] = {}
        for j in g:
            r = rows[j]
            rank = (r[_I_AT], r[_I_SHA], j)
            best = rev_win.get(r[_I_REV])
            if best is None or rank > best:
                rev_win[r[_I_REV]] = rank
        winners = {rank[-1] for rank in rev_win.values()}
        first = min(rows[j][_I_AT] for j in g)
        for j in g:
            extra[j] = (j in winners, j == page_win, first)
    get = extra.get
    return [r + get(i, none3) for i, r in enumerate(rows)]


def dead_letter_for(rec: Record, reason: str) -> DeadLetterRow:
    return DeadLetterRow(
        dedup_key=stable_event_id("DeadLetter", CONSUMER_SOURCE, rec.topic, rec.partition,
                                  rec.offset),
        site_id=_site_guess(rec.value), source=CONSUMER_SOURCE, topic=rec.topic,
        partition=rec.partition, offset=rec.offset, reason=reason,
        payload=_lenient(rec.value), occurred_at=datetime.now(UTC))


def _row(seq: int, ev: Event, rec: Record) -> tuple:
    file_code = fonds = page_no = revision = sha = None
    uri = path = size = media = doc = passed = names = None
    if isinstance(ev, FileEvent):
        file_code, fonds = ev.file_code, ev.fonds
    if isinstance(ev, PageScanned):
        page_no, revision, sha = ev.page_no, ev.revision, ev.sha256
        uri, path, size, media = ev.uri, ev.path, ev.size_bytes, ev.media_type
    elif isinstance(ev, PageChecked):
        # Typed here, so the database does not walk JSON for the busiest file event.
        page_no, sha, revision, passed = ev.page_no, ev.sha256, ev.revision, ev.passed
        names = sorted(c.check for c in ev.checks if not c.passed)
        # The checks as sent (re-serialising the models would turn 1 into 1.0); pydantic's own
        # JSON codec does this several times faster than the json module.
        doc = pydantic_core.to_json(pydantic_core.from_json(rec.value or b"{}")["checks"]
                                    ).decode()
    else:
        revision = getattr(ev, "revision", None)
        if isinstance(ev, PageRemoved):
            page_no, sha = ev.page_no, ev.sha256  # typed columns: its document is not read
        else:
            # The validated input itself: re-serialising the model would only cost time.
            doc = rec.value.decode() if rec.value is not None else ev.to_json().decode()
        if isinstance(ev, DeadLetter):
            # The label class rides in `path` (unused by DeadLetter) to keep one stage table.
            path = reason_class(ev.reason)
    return (seq, ev.event_id, ev.NAME, ev.site_id, file_code, fonds, page_no, revision, sha,
            ev.occurred_at, rec.topic, rec.partition, rec.offset, uri, path, size, media,
            passed, names, doc)


def _page_row(seq: int, page: PageEvent, rec: Record) -> tuple:
    """:func:`_row` of a page event from the fast decoder (the tests hold the two equal)."""
    ev = page.event
    if isinstance(ev, FastPageScanned):
        return (seq, ev.event_id, ev.NAME, ev.site_id, ev.file_code, ev.fonds, ev.page_no,
                ev.revision, ev.sha256, page.occurred_at, rec.topic, rec.partition, rec.offset,
                ev.uri, ev.path, ev.size_bytes, ev.media_type, None, None, None)
    return (seq, ev.event_id, ev.NAME, ev.site_id, ev.file_code, ev.fonds, ev.page_no,
            ev.revision, ev.sha256, page.occurred_at, rec.topic, rec.partition, rec.offset,
            None, None, None, None, ev.passed, page.failed_checks, page.checks_json)


@dataclass
class SiteDefaults:
    timezone: str = "Asia/Ho_Chi_Minh"
    work_start: time = time(7, 30)
    work_end: time = time(17, 0)
    workdays: tuple[int, ...] = (0, 1, 2, 3, 4)

    @classmethod
    def from_campaign(cls, c: Any) -> SiteDefaults:
        return cls(timezone=c.timezone, work_start=c.work_start, work_end=c.work_end,
                   workdays=tuple(c.workdays))


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
        self.timings: Counter[str] | None = None
        with conn.transaction():
            conn.execute(_CREATE_TEMP)
            # Safe for exactly-once: a batch and its offsets commit together, so a server crash
            # that loses the last commits rewinds both, and the consumer re-reads those records.
            conn.execute("SET synchronous_commit TO off")
            # Each batch statement runs in milliseconds; a misestimate of the (statistics-less)
            # staging table once pushed one over jit_above_cost, and compiling took longer than
            # running it (~40 ms a batch for 40 rows).
            conn.execute("SET jit TO off")
            # Assembly page lists and OCR page lists are TOASTed, in the staging table and in
            # their own: lz4 compresses them several times faster than the default pglz
            # (~3 % of the batch). Servers built without lz4 keep pglz.
            if conn.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                            " WHERE name = 'default_toast_compression'").fetchone() == (True,):
                conn.execute("SET default_toast_compression TO lz4")

    # --- writing ------------------------------------------------------------------------

    def apply(self, records: list[Record], *, commit_offsets: bool = True) -> BatchResult:
        """Parse and write ``records`` and (optionally) their offsets; call in a transaction."""
        return self.write(prepare(records), commit_offsets=commit_offsets)

    def write(self, prepared: Prepared, *, commit_offsets: bool = True) -> BatchResult:
        """Write a batch :func:`prepare` made (in any thread); call inside a transaction."""
        result = prepared.result
        cur = self.conn.cursor()
        if prepared.staged:
            self._exec(cur, "_PLAN_SHARED", _PLAN_SHARED, PLAN_LOCK)
            with self._timed("_COPY_STAGE"), cur.copy(_COPY_STAGE) as cp:
                cp.write(prepared.data)
            self._merge(cur, result, prepared)
        if result.dead_letters:
            result.dead_letters = self.store_dead_letters(result.dead_letters)
        if commit_offsets and result.offsets:
            with self._timed("_OFFSETS"):
                self.store_offsets(result.offsets)
        return result

    def store_dead_letters(self, rows: list[DeadLetterRow]) -> list[DeadLetterRow]:
        """Insert dead-letter rows; return those not stored before (replays are not news)."""
        fresh = []
        cur = self.conn.cursor()
        for d in rows:  # rare: one round trip each keeps replays uncounted
            cur.execute(_DEAD_LETTER_ROW, (
                d.dedup_key, d.site_id, d.source, d.topic, d.partition, d.offset, d.reason,
                reason_class(d.reason), d.payload, d.occurred_at))
            if cur.rowcount:
                fresh.append(d)
        return fresh

    def store_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        self.conn.cursor().executemany(
            _OFFSETS, [(self.group_id, t, p, o) for (t, p), o in sorted(offsets.items())])

    @contextmanager
    def _timed(self, name: str) -> Iterator[None]:
        """Add the block's seconds to ``timings[name]`` when a benchmark asks for timings."""
        if self.timings is None:
            yield
            return
        t = time_mod.perf_counter()
        try:
            yield
        finally:
            self.timings[name] += time_mod.perf_counter() - t

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
            with self._timed("_COPY_NEW"), self.conn.transaction():
                with cur.copy(_COPY_AUDIT) as cp:
                    cp.write(prepared.audit)
                if prepared.staged_types["PageScanned"]:
                    with cur.copy(_COPY_REVISIONS) as cp:
                        cp.write(prepared.revisions)
                if prepared.staged_types["PageChecked"]:
                    with cur.copy(_COPY_CHECKS) as cp:
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
        with self._timed("_COPY_TOUCHED_FILES"), cur.copy(_COPY_TOUCHED_FILES) as cp:
            cp.write(prepared.files)
        d = self.site_defaults
        self._exec(cur, "_NEW_SITES", _NEW_SITES, {
            "tz": d.timezone, "ws": d.work_start, "we": d.work_end, "wd": list(d.workdays),
            "sites": prepared.sites})
        result.sites_created = [r[0] for r in cur.fetchall()]
        copied = result.path == "copy"
        if self.timings is None:
            cur.execute(_MERGE_SCRIPT_AFTER_COPY if copied else _MERGE_SCRIPT, prepare=False)
        else:
            for name in _MERGE_STEPS:
                if not (copied and name in _COPIED_STEPS):
                    self._exec(cur, name, _STATEMENTS[name])
        if result.sites_created:
            log.warning("sites auto-created (not in a campaign plan)",
                        extra={"sites": result.sites_created[:20],
                               "count": len(result.sites_created)})

    def _dedup(self, cur: psycopg.Cursor, result: BatchResult, prepared: Prepared) -> None:
        """Drop the staged events already in ``audit_log`` and write the audit rows of the
        rest; stage the batch's checks for `_PAGE_CHECKS`, which keeps those of the rest."""
        self._exec(cur, "_DEDUP_APPLIED", _DEDUP_APPLIED)
        dropped = cur.rowcount  # read before the COPY below sets its own
        if prepared.staged_types["PageChecked"]:
            with self._timed("_COPY_STAGE_CHECKS"), cur.copy(_COPY_STAGE_CHECKS) as cp:
                cp.write(prepared.checks)
        if dropped:
            # Replays were dropped: the batch's picks may have named a dropped row.
            self._exec(cur, "_REPICK", _REPICK)
            self._exec(cur, "_COUNT", "SELECT etype, count(*) FROM stage GROUP BY etype")
            result.applied.update({t: n for t, n in cur.fetchall()})
        else:  # nothing dropped: what was staged is what applies (one round trip less)
            result.applied.update(prepared.staged_types)


def stored_offsets(conn: psycopg.Connection, group_id: str) -> dict[tuple[str, int], int]:
    rows = conn.execute(
        "SELECT topic, part, next_offset FROM consumer_offsets WHERE group_id = %s",
        (group_id,)).fetchall()
    return {(t, p): o for t, p, o in rows}
