"""The statements of a batch, in the order the writer runs them: its own (lock, dedup, offsets)
and the merge steps, which hold the page and file statements directly."""

from __future__ import annotations

from dataclasses import dataclass

from consumers.apply import sql_files, sql_pages

# The batch's first statement, taken before it writes a site or a page, so a plan import
# (which holds it exclusive) never waits for a row this batch holds while the batch waits for it.
PLAN_SHARED = "SELECT pg_advisory_xact_lock_shared(%s, %s)"

# The dedup path: write the audit row of every staged event not applied before and drop the
# others from the stage. A version-1 check's (or removal's) document is not known yet
# (`sql_pages.RESOLVE_LEGACY`).
DEDUP_APPLIED = """
WITH ins AS (
    INSERT INTO audit_log (event_id, action, site_id, fonds, file_code, document, page_index,
                           number, occurred_at, topic, part, "offset")
    SELECT event_id, etype, site_id, fonds, file_code,
           CASE WHEN etype <> 'PageScanned' AND number IS NOT NULL THEN NULL ELSE document END,
           page_index, number, occurred_at, topic, part, off
    FROM stage
    ON CONFLICT (event_id, action) DO NOTHING
    RETURNING event_id
)
DELETE FROM stage s WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.event_id = s.event_id)
"""

COUNT_STAGED = "SELECT etype, count(*) FROM stage GROUP BY etype"

OFFSETS = """
INSERT INTO consumer_offsets (group_id, topic, part, next_offset, updated_at)
VALUES (%s, %s, %s, %s, now())
ON CONFLICT (group_id, topic, part) DO UPDATE SET
    next_offset = excluded.next_offset, updated_at = excluded.updated_at
"""

DEAD_LETTER_ROW = """
INSERT INTO dead_letters (dedup_key, site_id, source, topic, part, "offset", reason,
                          reason_class, payload, occurred_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (dedup_key) DO NOTHING
"""


@dataclass(frozen=True)
class Step:
    """A merge statement. ``after_copy``: it runs when the batch went in by COPY too (False:
    it writes what that COPY already wrote). ``legacy``: it runs only for a batch holding
    version-1 checks or removals that name their page by number."""

    name: str
    sql: str
    after_copy: bool = True
    legacy: bool = False


MERGE_STEPS: tuple[Step, ...] = (
    Step("upsert_files", sql_files.UPSERT_FILES),
    Step("audit_unopened", sql_files.AUDIT_UNOPENED),
    Step("resolve_legacy", sql_pages.RESOLVE_LEGACY, legacy=True),
    Step("legacy_checks", sql_pages.LEGACY_CHECKS, legacy=True),
    Step("unpark_checks", sql_pages.UNPARK_CHECKS),
    Step("days_before", sql_files.DAYS_BEFORE),
    Step("page_revisions", sql_pages.PAGE_REVISIONS, after_copy=False),
    Step("page_removals", sql_pages.PAGE_REMOVALS),
    Step("page_checks", sql_pages.PAGE_CHECKS, after_copy=False),
    Step("checks_onto_pages", sql_pages.CHECKS_ONTO_PAGES),
    Step("insert_pages", sql_pages.INSERT_PAGES),
    Step("upsert_pages", sql_pages.UPSERT_PAGES),
    Step("pages_removed", sql_pages.PAGES_REMOVED),
    Step("assemblies", sql_files.ASSEMBLIES),
    Step("ocr", sql_files.OCR),
    Step("verdicts", sql_files.VERDICTS),
    Step("manifest", sql_files.MANIFEST),
    Step("closed", sql_files.CLOSED),
    Step("heartbeats", sql_files.HEARTBEATS),
    Step("dead_letter_events", sql_files.DEAD_LETTER_EVENTS),
    Step("file_current", sql_files.FILE_CURRENT),
    Step("ocr_progress", sql_files.OCR_PROGRESS),
    Step("file_pages", sql_files.FILE_PAGES),
    Step("file_state", sql_files.FILE_STATE),
    Step("days_after", sql_files.DAYS_AFTER),
    Step("lock_site_days", sql_files.LOCK_SITE_DAYS),
    Step("daily", sql_files.DAILY),
    Step("daily_prune", sql_files.DAILY_PRUNE),
)


def merge_steps(*, copied: bool, legacy: bool) -> tuple[Step, ...]:
    """The steps of a batch that went in by COPY (``copied``) or not, holding version-1
    events named by number (``legacy``) or not."""
    return tuple(s for s in MERGE_STEPS
                 if (s.after_copy or not copied) and (legacy or not s.legacy))


# The merges take no parameters, so they travel as one simple-query message: one round trip per
# batch instead of one per statement (on a busy host each round trip waits for the scheduler
# twice). Same statements, same order, same transaction; the first error aborts the rest.
MERGE_SCRIPTS: dict[tuple[bool, bool], str] = {
    (copied, legacy): ";\n".join(s.sql.strip() for s in merge_steps(copied=copied,
                                                                     legacy=legacy))
    for copied in (True, False) for legacy in (True, False)}
