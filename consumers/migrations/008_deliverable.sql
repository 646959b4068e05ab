-- The deliverable (issue 19): each file's archival record as its manifest sent it, and what
-- became of an accepted file afterwards: packaged (AIP/SIP), handed over, verified at the
-- receiving archive. Numbered 009: 007 and 008 are taken by work in flight on other branches.

ALTER TABLE files ADD COLUMN IF NOT EXISTS record jsonb;   -- sohoa.metadata.FileRecord

-- Appended by `sohoa package build` and `sohoa handover build|verify` (writer role); never
-- rewritten (grants.sql lists it append-only). event_id is derived from the fact, so a rerun
-- of the same step on the same bytes adds nothing.
CREATE TABLE IF NOT EXISTS deliverable_events (
    event_id        text COLLATE "C" PRIMARY KEY,
    step            text NOT NULL
                    CHECK (step IN ('packaged', 'handed_over', 'verified', 'verify_failed')),
    site_id         text COLLATE "C" NOT NULL,
    fonds           text COLLATE "C" NOT NULL DEFAULT '',
    file_code       text COLLATE "C" NOT NULL,
    revision        integer NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('AIP', 'SIP')),
    package         text NOT NULL,            -- the package's ZIP file name
    package_sha256  text COLLATE "C" NOT NULL,
    package_bytes   bigint NOT NULL,
    pages           integer NOT NULL,
    handover        text,                     -- the hand-over's folder name
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS deliverable_events_file_idx
    ON deliverable_events (site_id, fonds, file_code, occurred_at);

-- Each file's deliverable state: the latest step on the package of its current accepted
-- revision ('' when none), so a file re-judged after packaging shows nothing until packaged
-- again.
CREATE OR REPLACE VIEW v_file_deliverable AS
SELECT DISTINCT ON (d.site_id, d.fonds, d.file_code)
       d.site_id, d.fonds, d.file_code, d.revision, d.step, d.kind, d.package,
       d.package_sha256, d.package_bytes, d.pages, d.handover, d.occurred_at
FROM deliverable_events d
JOIN files f ON f.site_id = d.site_id AND f.fonds = d.fonds AND f.file_code = d.file_code
WHERE f.state = 'accepted' AND d.revision = f.verdict_revision
ORDER BY d.site_id, d.fonds, d.file_code, d.occurred_at DESC, d.event_id DESC;

-- Per site: files and pages at each step (a verified file was packaged and handed over).
CREATE OR REPLACE VIEW v_site_deliverables AS
SELECT s.site_id,
       count(v.file_code)::bigint AS files_packaged,
       count(v.file_code) FILTER (WHERE v.step IN ('handed_over', 'verified', 'verify_failed'))
           ::bigint AS files_handed_over,
       count(v.file_code) FILTER (WHERE v.step = 'verified')::bigint AS files_verified,
       count(v.file_code) FILTER (WHERE v.step = 'verify_failed')::bigint AS files_verify_failed,
       COALESCE(sum(v.pages), 0)::bigint AS pages_packaged,
       COALESCE(sum(v.pages) FILTER (WHERE v.step = 'verified'), 0)::bigint AS pages_verified,
       COALESCE(sum(v.package_bytes), 0)::bigint AS package_bytes
FROM sites s LEFT JOIN v_file_deliverable v ON v.site_id = s.site_id
GROUP BY s.site_id;
