"""The merges of a batch's page events: revisions, removals, checks and the current pages.

A page is (site_id, fonds, file_code, document, page_index). Every merge is commutative: the
highest revision wins, then the latest time, then the larger page digest, then the larger
document digest; first-seen times take the least. `pick_rev` / `pick_page` mark the staging row
that wins each revision / page within the batch (`prepared.pick_pages`, the same rule).
"""

from __future__ import annotations

from sohoa.events import LEGACY_DOCUMENT_PREFIX

# The legacy document prefix as an SQL expression (it holds a control character).
LEGACY = " || ".join(f"chr({ord(ch)})" for ch in LEGACY_DOCUMENT_PREFIX)

# A staging row's page, as join conditions against another alias.
_SAME_PAGE = ("{a}.site_id = {b}.site_id AND {a}.fonds = {b}.fonds AND {a}.file_code = "
              "{b}.file_code AND {a}.document = {b}.document AND {a}.page_index = {b}.page_index")


def same_page(a: str, b: str) -> str:
    return _SAME_PAGE.format(a=a, b=b)


# The rule of `pick_pages`, for the rows left after dropping already-applied events.
REPICK = """
UPDATE stage s SET pick_rev = (x.rn_rev = 1), pick_page = (x.rn_page = 1), first_at = x.first_at
FROM (
    SELECT seq,
           row_number() OVER (PARTITION BY site_id, fonds, file_code, document, page_index,
                                           revision
                              ORDER BY occurred_at DESC, sha256 DESC, document_sha256 DESC,
                                       seq DESC) AS rn_rev,
           row_number() OVER (PARTITION BY site_id, fonds, file_code, document, page_index
                              ORDER BY revision DESC, occurred_at DESC, sha256 DESC,
                                       document_sha256 DESC, seq DESC) AS rn_page,
           min(occurred_at) OVER (PARTITION BY site_id, fonds, file_code, document, page_index)
               AS first_at
    FROM stage WHERE etype = 'PageScanned'
) x
WHERE s.seq = x.seq
"""

# A version-1 check (or removal) named its page by number: its page is the file's page with
# that number (a single-page document, so page 1), among those stored and those this batch
# scans; the one whose content it names first, then by document name. Runs only for a batch
# that holds such an event. A removal whose page is not found keeps its legacy name (it is
# kept, and matches no page).
RESOLVE_LEGACY = f"""
UPDATE stage s SET document = COALESCE((
    SELECT x.document FROM (
        SELECT p.document, p.sha256 FROM pages p
        WHERE p.site_id = s.site_id AND p.fonds = s.fonds AND p.file_code = s.file_code
          AND p.number = s.number AND p.page_index = 1
        UNION ALL
        SELECT c.document, c.sha256 FROM stage c
        WHERE c.etype = 'PageScanned' AND c.pick_page AND c.site_id = s.site_id
          AND c.fonds = s.fonds AND c.file_code = s.file_code AND c.number = s.number
          AND c.page_index = 1
    ) x
    ORDER BY (x.sha256 = s.sha256) DESC, x.document LIMIT 1), s.document)
WHERE s.etype IN ('PageChecked', 'PageRemoved') AND s.number IS NOT NULL
  AND starts_with(s.document, {LEGACY})
"""

# …then the checks found go into `page_checks` and the others wait in `legacy_page_checks`
# for their page (`UNPARK_CHECKS`). Their rows were COPYed to `stage_checks` with the legacy
# document; the staging row says where it resolved (only events not applied before are there).
LEGACY_CHECKS = f"""
WITH legacy AS (
    SELECT c.site_id, c.fonds, c.file_code, s.document, s.number, c.page_index, c.revision,
           c.sha256, c.passed, c.failed, c.checks, c.width_mm, c.height_mm, c.checked_at,
           c.event_id
    FROM stage_checks c JOIN stage s ON s.etype = 'PageChecked' AND s.event_id = c.event_id
    WHERE starts_with(c.document, {LEGACY})
), placed AS (
    INSERT INTO page_checks (site_id, fonds, file_code, document, page_index, revision, sha256,
                             passed, failed, checks, width_mm, height_mm, checked_at, event_id)
    SELECT site_id, fonds, file_code, document, page_index, revision, sha256, passed, failed,
           checks, width_mm, height_mm, checked_at, event_id
    FROM legacy WHERE NOT starts_with(document, {LEGACY})
)
INSERT INTO legacy_page_checks (site_id, fonds, file_code, number, revision, sha256, passed,
                                failed, checks, width_mm, height_mm, checked_at, event_id)
SELECT site_id, fonds, file_code, number, revision, sha256, passed, failed, checks, width_mm,
       height_mm, checked_at, event_id
FROM legacy WHERE starts_with(document, {LEGACY})
"""

# A waiting version-1 check whose page this batch scans joins `page_checks` (before the pages
# are written, so the page takes it). The table is almost always empty: the one-time filter
# skips the rest of the plan then.
UNPARK_CHECKS = """
WITH pick AS (
    SELECT DISTINCT ON (u.event_id) u.event_id, s.document
    FROM legacy_page_checks u
    JOIN stage s ON s.etype = 'PageScanned' AND s.pick_page AND s.site_id = u.site_id
        AND s.fonds = u.fonds AND s.file_code = u.file_code AND s.number = u.number
        AND s.page_index = 1
    WHERE (SELECT EXISTS (SELECT 1 FROM legacy_page_checks))
    ORDER BY u.event_id, (s.sha256 = u.sha256) DESC, s.document
), moved AS (
    DELETE FROM legacy_page_checks u USING pick WHERE u.event_id = pick.event_id
    RETURNING u.*, pick.document
)
INSERT INTO page_checks (site_id, fonds, file_code, document, page_index, revision, sha256,
                         passed, failed, checks, width_mm, height_mm, checked_at, event_id)
SELECT site_id, fonds, file_code, document, 1, revision, sha256, passed, failed, checks,
       width_mm, height_mm, checked_at, event_id
FROM moved
"""

# The dedup path's revisions (the COPY path writes the batch's in `_copy_new`).
PAGE_REVISIONS = """
INSERT INTO page_revisions (site_id, fonds, file_code, document, page_index, revision, number,
                            document_pages, sha256, document_sha256, uri, path, size_bytes,
                            media_type, scanned_at, event_id)
SELECT site_id, fonds, file_code, document, page_index, revision, number, document_pages,
       sha256, document_sha256, uri, path, size_bytes, media_type, occurred_at, event_id
FROM stage WHERE etype = 'PageScanned' AND pick_rev
ON CONFLICT (site_id, fonds, file_code, document, page_index, revision) DO UPDATE SET
    number = excluded.number, document_pages = excluded.document_pages,
    sha256 = excluded.sha256, document_sha256 = excluded.document_sha256, uri = excluded.uri,
    path = excluded.path, size_bytes = excluded.size_bytes, media_type = excluded.media_type,
    scanned_at = excluded.scanned_at, event_id = excluded.event_id
WHERE (excluded.scanned_at, excluded.sha256, excluded.document_sha256)
    > (page_revisions.scanned_at, page_revisions.sha256, page_revisions.document_sha256)
"""

PAGE_REMOVALS = """
INSERT INTO page_removals (site_id, fonds, file_code, document, page_index, sha256, removed_at,
                           event_id)
SELECT DISTINCT ON (site_id, fonds, file_code, document, page_index, sha256)
       site_id, fonds, file_code, document, page_index, sha256, occurred_at, event_id
FROM stage WHERE etype = 'PageRemoved'
ORDER BY site_id, fonds, file_code, document, page_index, sha256, occurred_at DESC,
         event_id DESC
ON CONFLICT (site_id, fonds, file_code, document, page_index, sha256) DO UPDATE SET
    removed_at = excluded.removed_at, event_id = excluded.event_id
WHERE (excluded.removed_at, excluded.event_id) > (page_removals.removed_at, page_removals.event_id)
"""

# The careful path's checks: those of the events left once replays were dropped (the COPY
# path writes the batch's checks in `_copy_new`); version-1 checks go by `LEGACY_CHECKS`.
# `stage_checks` has the columns of `page_checks`, in its order.
PAGE_CHECKS = f"""
INSERT INTO page_checks
SELECT c.* FROM stage_checks c
WHERE NOT starts_with(c.document, {LEGACY})
  AND EXISTS (SELECT 1 FROM stage s WHERE s.etype = 'PageChecked' AND s.event_id = c.event_id)
"""

# The check of a page revision is its latest, by checked_at and then event_id: `page_checks`
# keeps every check, and its key's order makes this one index probe. It gives the page its
# verdict and its physical size.
_LATEST_CHECK = """(SELECT x.passed, x.width_mm, x.height_mm FROM page_checks x
    WHERE {same} AND x.revision = {t}.revision
    ORDER BY x.checked_at DESC, x.event_id DESC LIMIT 1)"""


def latest_check(t: str) -> str:
    return _LATEST_CHECK.format(same=same_page("x", t), t=t)


# A page the batch checked takes the latest check of its revision, stored before or now. Pages
# are probed first and the checks only for those found: a check often comes in the batch of
# its page's scan, and then the page's insert reads it (`INSERT_PAGES`, after this).
CHECKS_ONTO_PAGES = f"""
UPDATE pages p SET check_passed = k.passed, width_mm = k.width_mm, height_mm = k.height_mm
FROM (
    SELECT q.site_id, q.fonds, q.file_code, q.document, q.page_index, l.*
    FROM stage c
    JOIN pages q ON {same_page("q", "c")} AND q.revision = c.revision
    CROSS JOIN LATERAL {latest_check("q")} l
    WHERE c.etype = 'PageChecked'
) k
WHERE {same_page("p", "k")}
  AND (p.check_passed, p.width_mm, p.height_mm) IS DISTINCT FROM (k.passed, k.width_mm, k.height_mm)
"""

# A page the batch scans: its winning scan (`pick_page`), on the day of its first scan, with
# the check of its revision if one is stored (checks may come before their scan). The day each
# page sits on afterwards is a day whose count may have changed.
_PAGE_ROWS = """
WITH written AS (
    INSERT INTO pages (site_id, fonds, file_code, document, page_index, number, document_pages,
                       revision, sha256, document_sha256, uri, path, size_bytes, media_type,
                       scanned_at, first_scanned_at, scan_day, check_passed, width_mm,
                       height_mm)
    SELECT c.site_id, c.fonds, c.file_code, c.document, c.page_index, c.number,
           c.document_pages, c.revision, c.sha256, c.document_sha256, c.uri, c.path,
           c.size_bytes, c.media_type, c.occurred_at, c.first_at,
           (c.first_at AT TIME ZONE st.timezone)::date, k.passed, k.width_mm, k.height_mm
    FROM stage c JOIN sites st USING (site_id)
    LEFT JOIN LATERAL {latest} k ON true
    WHERE c.etype = 'PageScanned' AND c.pick_page
      AND {stored} (SELECT 1 FROM known_pages s WHERE {known})
    {merge}
    RETURNING site_id, scan_day
)
INSERT INTO touched_days (site_id, day) SELECT DISTINCT site_id, scan_day FROM written
"""

# Pages not stored before the batch (almost all of them): a plain insert, which skips the
# upsert's own probe for a conflict. Should another writer store one of them in the meantime
# (one consumer per partition makes that a rebalance race), the unique key refuses the batch
# and the consumer applies it record by record, when those pages are known.
INSERT_PAGES = _PAGE_ROWS.format(stored="NOT EXISTS", merge="", latest=latest_check("c"),
                                 known=same_page("s", "c"))

# Pages stored before the batch (a rescan, a late event): merged with what is stored. ON
# CONFLICT cannot join, so "the scan is newer" is spelled out in each column.
_NEWER = ("(excluded.revision, excluded.scanned_at, excluded.sha256, excluded.document_sha256)"
          " > (pages.revision, pages.scanned_at, pages.sha256, pages.document_sha256)")
_FOLLOW_NEWER = ("number", "document_pages", "revision", "check_passed", "width_mm", "height_mm",
                 "sha256", "document_sha256", "uri", "path", "size_bytes", "media_type",
                 "scanned_at")
UPSERT_PAGES = _PAGE_ROWS.format(
    stored="EXISTS", latest=latest_check("c"), known=same_page("s", "c"),
    merge="ON CONFLICT (site_id, fonds, file_code, document, page_index) DO UPDATE SET\n"
    + ",\n".join(f"    {c} = CASE WHEN {_NEWER} THEN excluded.{c} ELSE pages.{c} END"
                 for c in _FOLLOW_NEWER)
    + ",\n    first_scanned_at = LEAST(pages.first_scanned_at, excluded.first_scanned_at),"
      "\n    scan_day = CASE WHEN excluded.first_scanned_at < pages.first_scanned_at"
      "\n                    THEN excluded.scan_day ELSE pages.scan_day END")

# Only pages that a removal may concern: those removed in this batch, and those scanned in it
# that have any removal on record (a new revision must clear or keep an earlier removal).
PAGES_REMOVED = f"""
UPDATE pages p SET removed_at = (
    SELECT max(r.removed_at) FROM page_removals r
    WHERE {same_page("r", "p")} AND r.sha256 = p.sha256 AND r.removed_at >= p.scanned_at)
FROM (SELECT site_id, fonds, file_code, document, page_index FROM stage
      WHERE etype = 'PageRemoved'
      UNION
      SELECT s.site_id, s.fonds, s.file_code, s.document, s.page_index FROM stage s
      WHERE s.etype = 'PageScanned'
        AND EXISTS (SELECT 1 FROM page_removals r WHERE {same_page("r", "s")})) k
WHERE {same_page("p", "k")}
"""
