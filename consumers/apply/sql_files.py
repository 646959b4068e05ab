"""The merges of a batch's file, site and dead-letter events, the files' derived columns and the
days a batch changes.

A file is (site_id, fonds, file_code). Integers inside JSON documents are read through
`numeric`: the contract (pydantic, lax) reads 4.0 and 4e0 as 4, and a plain integer cast would
refuse them (and the event with them).
"""

from __future__ import annotations

from consumers.db import SITE_DAYS_LOCK_CLASS

_SAME_FILE = ("{a}.site_id = {b}.site_id AND {a}.fonds = {b}.fonds "
              "AND {a}.file_code = {b}.file_code")


def same_file(a: str, b: str) -> str:
    return _SAME_FILE.format(a=a, b=b)


NEW_SITES = """
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
# `prepared.touched_files`). The upsert also locks each file's row until the batch commits, so
# two batches about one file run their merges one after the other.
UPSERT_FILES = """
INSERT INTO files (site_id, fonds, file_code, opened, first_seen_at)
SELECT site_id, fonds, file_code, opened, first_at FROM touched_files
ON CONFLICT (site_id, fonds, file_code) DO UPDATE SET
    opened = files.opened OR excluded.opened,
    first_seen_at = LEAST(files.first_seen_at, excluded.first_seen_at)
"""

# An event about a file that no PageScanned/FileManifest has opened yet is kept (it may simply
# be early), and the audit log says so.
AUDIT_UNOPENED = """
INSERT INTO audit_log (event_id, action, site_id, fonds, file_code, document, page_index,
                       number, detail, occurred_at)
SELECT s.event_id, 'file_not_opened', s.site_id, s.fonds, s.file_code,
       CASE WHEN s.etype <> 'PageScanned' AND s.number IS NOT NULL THEN NULL ELSE s.document END,
       s.page_index, s.number,
       s.etype || ' for a file with no scanned page yet: kept, counted when pages arrive',
       s.occurred_at
FROM stage s JOIN files f USING (site_id, fonds, file_code)
WHERE NOT f.opened AND s.etype NOT IN ('PageScanned', 'FileManifest')
ON CONFLICT DO NOTHING
"""

# The days the verdicts of the batch's files sit on (read before the batch and after it).
_VERDICT_DAYS = """
SELECT f.site_id, (f.verdict_at AT TIME ZONE st.timezone)::date
FROM files f JOIN touched_files t USING (site_id, fonds, file_code) JOIN sites st USING (site_id)
WHERE f.verdict_at IS NOT NULL
"""

# The batch's page keys, once each: a page scanned (its one `pick_page` row) or removed. Every
# write to `pages` in a batch is to one of these (`sql_pages`: INSERT_PAGES, UPSERT_PAGES,
# PAGES_REMOVED; CHECKS_ONTO_PAGES changes neither day nor removal).
_BATCH_PAGES = """SELECT site_id, fonds, file_code, document, page_index FROM stage
              WHERE etype = 'PageScanned' AND pick_page
              UNION
              SELECT site_id, fonds, file_code, document, page_index FROM stage
              WHERE etype = 'PageRemoved'"""

# Days whose counts may change: the days pages and verdicts sit on before this batch… The
# probe that finds a page's day also says it is stored: `known_pages` keeps those (few) keys
# with their day and removal, so the batch's new pages are inserted without a second probe
# (`sql_pages.INSERT_PAGES`) and `DAILY` counts the difference the batch makes. The probe
# locks the row: a page another writer changes meanwhile (a rebalance race) waits for this
# commit, so what is read here is what the batch changes.
DAYS_BEFORE = """
WITH stored AS (
    SELECT k.site_id, k.fonds, k.file_code, k.document, k.page_index, p.scan_day AS day,
           p.removed
    FROM (""" + _BATCH_PAGES + """) k
    JOIN LATERAL (SELECT q.scan_day, q.removed FROM pages q WHERE q.site_id = k.site_id
                   AND q.fonds = k.fonds AND q.file_code = k.file_code
                   AND q.document = k.document AND q.page_index = k.page_index
                  FOR UPDATE) p ON true
), known AS (
    INSERT INTO known_pages (site_id, fonds, file_code, document, page_index, day, removed)
    SELECT site_id, fonds, file_code, document, page_index, day, removed FROM stored
)
INSERT INTO touched_days (site_id, day)
SELECT site_id, day FROM stored
UNION
""" + _VERDICT_DAYS

# The winner of each revision is picked first (the sort carries the document unread), then
# jsonb_to_record reads each (often TOASTed, page-list sized) document once: every `doc->`
# would fetch and decompress it again, several times a row.
ASSEMBLIES = """
INSERT INTO file_assemblies (site_id, fonds, file_code, revision, trigger, pages, documents,
                             page_list, gaps, duplicate_page_nos, duplicate_content,
                             missing_pages, missing_documents, languages, expected_pages,
                             count_mismatch, classification, assembled_at, event_id)
SELECT s.site_id, s.fonds, s.file_code, s.revision, j.trigger, jsonb_array_length(j.pages),
       (SELECT count(DISTINCT x->>'document') FROM jsonb_array_elements(j.pages) x), j.pages,
       ARRAY(SELECT x::numeric::integer FROM jsonb_array_elements_text(j.gaps) x),
       ARRAY(SELECT x::numeric::integer FROM jsonb_array_elements_text(j.duplicate_page_nos) x),
       COALESCE(j.duplicate_content, '[]'::jsonb), COALESCE(j.missing_pages, '[]'::jsonb),
       COALESCE(j.missing_documents, '[]'::jsonb), COALESCE(j.languages, '{}'::jsonb),
       j.expected_pages::integer, COALESCE(j.count_mismatch, false), j.classification,
       s.occurred_at, s.event_id
FROM (SELECT DISTINCT ON (site_id, fonds, file_code, revision)
             site_id, fonds, file_code, revision, occurred_at, event_id, doc
      FROM stage WHERE etype = 'FileAssembled'
      ORDER BY site_id, fonds, file_code, revision, occurred_at DESC, event_id DESC) s
CROSS JOIN LATERAL jsonb_to_record(s.doc) AS j(
    trigger text, pages jsonb, gaps jsonb, duplicate_page_nos jsonb, duplicate_content jsonb,
    missing_pages jsonb, missing_documents jsonb, languages jsonb, expected_pages numeric,
    count_mismatch boolean, classification text)
ON CONFLICT (site_id, fonds, file_code, revision) DO UPDATE SET
    trigger = excluded.trigger, pages = excluded.pages, documents = excluded.documents,
    page_list = excluded.page_list, gaps = excluded.gaps,
    duplicate_page_nos = excluded.duplicate_page_nos,
    duplicate_content = excluded.duplicate_content, missing_pages = excluded.missing_pages,
    missing_documents = excluded.missing_documents, languages = excluded.languages,
    expected_pages = excluded.expected_pages, count_mismatch = excluded.count_mismatch,
    classification = excluded.classification, assembled_at = excluded.assembled_at,
    event_id = excluded.event_id
WHERE (excluded.assembled_at, excluded.event_id)
    > (file_assemblies.assembled_at, file_assemblies.event_id)
"""

# A retried OCR of the same revision: a completion beats a failure, then the latest wins.
OCR = """
INSERT INTO ocr_results (site_id, fonds, file_code, revision, status, output_uri,
                         output_sha256, text_uri, pages, mean_confidence, seconds, reason,
                         attempts, occurred_at, event_id)
SELECT DISTINCT ON (site_id, fonds, file_code, revision)
       site_id, fonds, file_code, revision,
       CASE etype WHEN 'OcrCompleted' THEN 'completed' ELSE 'failed' END,
       doc->>'output_uri', doc->>'output_sha256', doc->>'text_uri', doc->'pages',
       (SELECT avg((x->>'mean_confidence')::double precision)
          FROM jsonb_array_elements(COALESCE(doc->'pages', '[]'::jsonb)) x),
       (doc->>'seconds')::double precision, doc->>'reason', (doc->>'attempts')::numeric::integer,
       occurred_at, event_id
FROM stage WHERE etype IN ('OcrCompleted', 'OcrFailed')
ORDER BY site_id, fonds, file_code, revision, (etype = 'OcrCompleted') DESC, occurred_at DESC,
         event_id DESC
ON CONFLICT (site_id, fonds, file_code, revision) DO UPDATE SET
    status = excluded.status, output_uri = excluded.output_uri,
    output_sha256 = excluded.output_sha256, text_uri = excluded.text_uri,
    pages = excluded.pages, mean_confidence = excluded.mean_confidence,
    seconds = excluded.seconds, reason = excluded.reason, attempts = excluded.attempts,
    occurred_at = excluded.occurred_at, event_id = excluded.event_id
WHERE (excluded.status = 'completed', excluded.occurred_at, excluded.event_id)
    > (ocr_results.status = 'completed', ocr_results.occurred_at, ocr_results.event_id)
"""

VERDICTS = """
INSERT INTO verdicts (event_id, site_id, fonds, file_code, revision, verdict, reasons,
                      pages_total, pages_accepted, occurred_at)
SELECT event_id, site_id, fonds, file_code, revision, doc->>'verdict',
       COALESCE(doc->'reasons', '[]'::jsonb), COALESCE((doc->>'pages_total')::numeric::integer, 0),
       COALESCE((doc->>'pages_accepted')::numeric::integer, 0), occurred_at
FROM stage WHERE etype = 'FileVerdict'
ON CONFLICT (event_id) DO NOTHING
"""

MANIFEST = f"""
UPDATE files f SET
    title = m.doc->>'title', expected_pages = (m.doc->>'expected_pages')::numeric::integer,
    classification = m.doc->>'classification', priority = (m.doc->>'priority')::numeric::smallint,
    start_date = m.doc->>'start_date', end_date = m.doc->>'end_date',
    manifest_documents = COALESCE(m.doc->'documents', '[]'::jsonb),
    metadata = COALESCE(m.doc->'metadata', '{{}}'::jsonb),
    record = NULLIF(m.doc->'record', 'null'::jsonb),
    manifest_at = m.occurred_at
FROM (SELECT DISTINCT ON (site_id, fonds, file_code) * FROM stage WHERE etype = 'FileManifest'
      ORDER BY site_id, fonds, file_code, occurred_at DESC, event_id DESC) m
WHERE {same_file("f", "m")} AND (f.manifest_at IS NULL OR m.occurred_at > f.manifest_at)
"""

# The earliest close counts (a marker after an idle close does not move the time back).
CLOSED = f"""
UPDATE files f SET closed_at = c.occurred_at, closed_reason = c.doc->>'reason'
FROM (SELECT DISTINCT ON (site_id, fonds, file_code) * FROM stage WHERE etype = 'FileClosed'
      ORDER BY site_id, fonds, file_code, occurred_at, event_id) c
WHERE {same_file("f", "c")} AND (f.closed_at IS NULL OR c.occurred_at < f.closed_at)
"""

HEARTBEATS = """
INSERT INTO site_heartbeats (site_id, last_heartbeat_at, agent_version, outbox_depth,
                             oldest_unsent_age_s, disk_free_bytes, roots, event_id,
                             upload_pending_pages, upload_pending_bytes,
                             oldest_unuploaded_age_s, upload_error)
SELECT DISTINCT ON (site_id) site_id, occurred_at, doc->>'agent_version',
       (doc->>'outbox_depth')::numeric::integer, COALESCE((doc->>'oldest_unsent_age_s')::float8, 0),
       COALESCE((doc->>'disk_free_bytes')::numeric::bigint, 0), COALESCE(doc->'roots', '[]'::jsonb),
       event_id, COALESCE((doc->>'upload_pending_pages')::numeric::integer, 0),
       COALESCE((doc->>'upload_pending_bytes')::numeric::bigint, 0),
       COALESCE((doc->>'oldest_unuploaded_age_s')::float8, 0), doc->>'upload_error'
FROM stage WHERE etype = 'SiteHeartbeat'
ORDER BY site_id, occurred_at DESC, event_id DESC
ON CONFLICT (site_id) DO UPDATE SET
    last_heartbeat_at = excluded.last_heartbeat_at, agent_version = excluded.agent_version,
    outbox_depth = excluded.outbox_depth, oldest_unsent_age_s = excluded.oldest_unsent_age_s,
    disk_free_bytes = excluded.disk_free_bytes, roots = excluded.roots,
    event_id = excluded.event_id, upload_pending_pages = excluded.upload_pending_pages,
    upload_pending_bytes = excluded.upload_pending_bytes,
    oldest_unuploaded_age_s = excluded.oldest_unuploaded_age_s,
    upload_error = excluded.upload_error
WHERE (excluded.last_heartbeat_at, excluded.event_id)
    > (site_heartbeats.last_heartbeat_at, site_heartbeats.event_id)
"""

DEAD_LETTER_EVENTS = """
INSERT INTO dead_letters (dedup_key, site_id, source, topic, part, "offset", reason,
                          reason_class, payload, occurred_at)
SELECT event_id, site_id, doc->>'source', doc->>'topic', (doc->>'partition')::numeric::integer,
       (doc->>'offset')::numeric::bigint, doc->>'reason', path, COALESCE(doc->>'payload', ''),
       occurred_at
FROM stage WHERE etype = 'DeadLetter'
ON CONFLICT (dedup_key) DO NOTHING
"""

# Current assembly, OCR and verdict of every touched file, recomputed from the history tables.
FILE_CURRENT = f"""
UPDATE files f SET
    assembled_revision = a.revision, assembled_at = a.assembled_at, assembled_pages = a.pages,
    gaps = a.gaps, count_mismatch = a.count_mismatch,
    ocr_revision = o.revision, ocr_status = o.status, ocr_at = o.occurred_at,
    verdict_revision = v.revision, verdict = v.verdict, verdict_at = v.occurred_at,
    verdict_event_id = v.event_id, pages_total = v.pages_total,
    pages_accepted = v.pages_accepted
FROM touched_files t
LEFT JOIN LATERAL (
    SELECT * FROM file_assemblies x WHERE {same_file("x", "t")}
    ORDER BY revision DESC, assembled_at DESC, event_id DESC LIMIT 1) a ON true
LEFT JOIN LATERAL (
    SELECT * FROM ocr_results x WHERE {same_file("x", "t")}
    ORDER BY revision DESC LIMIT 1) o ON true
LEFT JOIN LATERAL (
    SELECT * FROM verdicts x WHERE {same_file("x", "t")}
    ORDER BY revision DESC, occurred_at DESC, event_id DESC LIMIT 1) v ON true
WHERE {same_file("f", "t")}
"""

# How far the OCR of the file's current assembly has got (migration 010): a progress of
# another revision is stale, and of the stored revision only a later one counts (a retried
# attempt starts again from its first page). After FILE_CURRENT, which sets the revision.
OCR_PROGRESS = f"""
UPDATE files f SET ocr_pages_done = p.done, ocr_pages_total = p.total,
                   ocr_progress_revision = p.revision, ocr_progress_at = p.occurred_at
FROM (SELECT DISTINCT ON (s.site_id, s.fonds, s.file_code)
             s.site_id, s.fonds, s.file_code, s.revision, s.occurred_at, v.done, v.total
      FROM stage s JOIN files x USING (site_id, fonds, file_code)
      CROSS JOIN LATERAL (SELECT (s.doc->>'pages_done')::numeric::integer AS done,
                                 (s.doc->>'pages_total')::numeric::integer AS total) v
      WHERE s.etype = 'OcrProgress' AND s.revision = x.assembled_revision
      ORDER BY s.site_id, s.fonds, s.file_code, s.occurred_at DESC, v.done DESC,
               s.event_id DESC) p
WHERE {same_file("f", "p")}
  AND (f.ocr_progress_revision IS DISTINCT FROM p.revision
       OR (p.occurred_at, p.done) > (f.ocr_progress_at, f.ocr_pages_done))
"""

# A file's counts: its current (not removed) pages across documents, its distinct documents
# holding one, those pages checked and failed. LATERAL keeps this an index range scan per
# touched file however large `pages` grows; only files whose pages or checks changed are
# recounted.
FILE_PAGES = f"""
UPDATE files f SET pages = a.n, documents = a.documents, last_page_at = a.last_at,
                   checked_pages = a.checked, qc_failed_pages = a.failed
FROM touched_files t
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE NOT p.removed) AS n,
           count(DISTINCT p.document) FILTER (WHERE NOT p.removed) AS documents,
           max(p.scanned_at) FILTER (WHERE NOT p.removed) AS last_at,
           count(p.check_passed) FILTER (WHERE NOT p.removed) AS checked,
           count(*) FILTER (WHERE NOT p.removed AND NOT p.check_passed) AS failed
    FROM pages p
    WHERE {same_file("p", "t")}
) a
WHERE {same_file("f", "t")} AND t.pages_changed
"""

# A file's state follows from its stored facts by `sohoa_file_state` (migration 005, which
# sets every migrated file's state with it too).
FILE_STATE = f"""
UPDATE files f SET state = sohoa_file_state(f)
FROM touched_files t
WHERE {same_file("f", "t")}
"""

# …and the days they sit on after it: a scanned page's day is the one its write returned
# (`sql_pages._PAGE_ROWS`); a removal leaves the page on its day, which `DAYS_BEFORE` holds; a
# verdict's day is read here, after `FILE_CURRENT`.
DAYS_AFTER = """
INSERT INTO touched_days (site_id, day)
""" + _VERDICT_DAYS

# Consumers of one group write their own files but share sites and days: a day's count taken
# while another consumer's pages on that day are written but not committed would miss them,
# and the later commit would overwrite the other's count with it. So each batch locks its
# sites (in one order: no deadlock) until it commits, and counts in the statement after the
# lock, whose snapshot includes every batch that held it before (see consumers.db).
LOCK_SITE_DAYS = f"""
SELECT count(pg_advisory_xact_lock({SITE_DAYS_LOCK_CLASS}, q.k))
FROM (SELECT DISTINCT hashtext(site_id) AS k FROM touched_days ORDER BY 1) q
"""

# Per site and local day: the current pages first scanned that day, and the pages and files
# whose accepting verdict is dated that day. (Migration 005 counts every day the same way.)
# Pages are counted by difference: the batch's pages as they are now, less as they were
# (`known_pages`), added to the day's count. A recount of the day cost a scan of all its pages
# per batch, which at 3,000 pages/s grew with the day until the consumer fell behind
# (docs/scaling.md). A row exists exactly for the days with something on them, so a day with no
# row counted 0 before. Accepted files are few per site: they are recounted.
DAILY = """
WITH delta AS (
    SELECT site_id, day, sum(n) AS n FROM (
        SELECT p.site_id, p.scan_day AS day, 1 AS n
        FROM (""" + _BATCH_PAGES + """) k
        JOIN pages p ON p.site_id = k.site_id AND p.fonds = k.fonds
            AND p.file_code = k.file_code AND p.document = k.document
            AND p.page_index = k.page_index
        WHERE NOT p.removed
        UNION ALL
        SELECT site_id, day, -1 FROM known_pages WHERE NOT removed
    ) x GROUP BY site_id, day
)
INSERT INTO daily_progress AS d (site_id, day, pages_scanned, pages_accepted, files_accepted)
SELECT t.site_id, t.day, COALESCE(dl.n, 0), COALESCE(acc.pages, 0), COALESCE(acc.files, 0)
FROM (SELECT site_id, day FROM touched_days UNION SELECT site_id, day FROM delta) t
JOIN sites st ON st.site_id = t.site_id
LEFT JOIN delta dl ON dl.site_id = t.site_id AND dl.day = t.day
LEFT JOIN LATERAL (
    SELECT sum(COALESCE(f.pages_accepted, 0)) AS pages, count(*) AS files FROM files f
    WHERE f.site_id = t.site_id AND f.state = 'accepted'
      AND (f.verdict_at AT TIME ZONE st.timezone)::date = t.day) acc ON true
ON CONFLICT (site_id, day) DO UPDATE SET
    pages_scanned = d.pages_scanned + excluded.pages_scanned,
    pages_accepted = excluded.pages_accepted, files_accepted = excluded.files_accepted
"""

# Keep the table canonical: a day with nothing left on it has no row, whatever the history.
DAILY_PRUNE = """
DELETE FROM daily_progress d USING (SELECT DISTINCT site_id, day FROM touched_days) t
WHERE d.site_id = t.site_id AND d.day = t.day
  AND d.pages_scanned = 0 AND d.pages_accepted = 0 AND d.files_accepted = 0
"""
