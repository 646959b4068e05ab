-- page_checks keeps every check, as verdicts does: the check of a page revision is its latest
-- by (checked_at, event_id), the rule the upsert used to keep only that one. An applied event
-- is never stored twice (its audit_log row is the dedup record, written in the same
-- transaction), so a batch's checks go in by COPY, with no conflict probe and no rewrite of a
-- stored row. The key's order serves the lookup of a revision's latest check.
ALTER TABLE page_checks DROP CONSTRAINT page_checks_pkey,
    ADD CONSTRAINT page_checks_pkey
        PRIMARY KEY (site_id, file_code, page_no, revision, checked_at, event_id);

-- The checks as the QC worker sent them: nothing queries inside them, so json (its syntax
-- checked, its text kept) costs half what building jsonb did, once per check.
ALTER TABLE page_checks ALTER COLUMN checks TYPE json USING checks::json;
