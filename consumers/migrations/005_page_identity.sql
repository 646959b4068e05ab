-- Page identity v2 (issue 17): a file is (site_id, fonds, file_code); a page is its document
-- (the document's file name in the file folder, NFC) and its page in that document.
--
-- Data stored before this migration was written by version-1 events: a page was one image
-- file named by its page number. Each becomes the page that the contract's upgrade of its
-- events names (sohoa.events._document_of, here `sohoa_v1_document`): its document is the NFC
-- name of the last segment of its `path`, else of its URI's path, else its number as text; it
-- is page 1 of a one-page document; `number` is the old page_no; both digests are its SHA-256.
-- So version-1 events that arrive after the migration land on the rows migrated here. A page
-- takes its file's fonds (before this migration a file code named one file per site). A
-- version-1 page's revisions all belong to that page, named by its current file. Nothing
-- counted moves: pages keep their day, removal and check; the derived columns and the daily
-- counts are then recomputed from the migrated rows by the applier's rules.

-- --- the version-1 upgrade rule, in SQL -------------------------------------------------------

-- urllib.parse.unquote: %XX sequences are UTF-8 bytes (an invalid sequence leaves the text as
-- it was, where Python would put U+FFFD: no producer of ours writes one).
CREATE OR REPLACE FUNCTION sohoa_unquote(s text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    out bytea := '';
    i integer := 1;
    n integer := length(s);
BEGIN
    IF position('%' IN s) = 0 THEN
        RETURN s;
    END IF;
    WHILE i <= n LOOP
        IF substr(s, i, 1) = '%' AND substr(s, i + 1, 2) ~ '^[0-9A-Fa-f]{2}$' THEN
            out := out || decode(substr(s, i + 1, 2), 'hex');
            i := i + 3;
        ELSE
            out := out || convert_to(substr(s, i, 1), 'UTF8');
            i := i + 1;
        END IF;
    END LOOP;
    RETURN convert_from(out, 'UTF8');
EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
    RETURN s;
END
$$;

-- pathlib.PurePosixPath(p).name: the last segment, "" and "." segments ignored.
CREATE OR REPLACE FUNCTION sohoa_path_name(p text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT COALESCE((SELECT x FROM unnest(string_to_array(p, '/')) WITH ORDINALITY u(x, o)
                     WHERE x NOT IN ('', '.') ORDER BY o DESC LIMIT 1), '')
$$;

-- urllib.parse.urlsplit(uri).path: leading C0 controls and spaces, tabs and line breaks go;
-- then the scheme, the network location, the fragment and the query.
CREATE OR REPLACE FUNCTION sohoa_uri_path(uri text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT split_part(split_part(
        regexp_replace(
            regexp_replace(
                translate(regexp_replace(uri, '^[\x01-\x20]+', ''), E'\t\r\n', ''),
                '^[A-Za-z][A-Za-z0-9+.-]*:', ''),
            '^//[^/?#]*', ''),
        '#', 1), '?', 1)
$$;

-- sohoa.events._document_of: the document of a version-1 page.
CREATE OR REPLACE FUNCTION sohoa_v1_document(path text, uri text, page_no integer) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN name = '' THEN page_no::text ELSE normalize(name, NFC) END
    FROM (SELECT CASE
        WHEN sohoa_path_name(COALESCE(path, '')) <> '' THEN sohoa_path_name(path)
        WHEN COALESCE(uri, '') <> '' THEN sohoa_path_name(sohoa_unquote(sohoa_uri_path(uri)))
        ELSE '' END AS name) n
$$;

-- --- every version-1 page and its version-2 key ----------------------------------------------

CREATE TEMP TABLE v1_pages ON COMMIT DROP AS
SELECT p.site_id, p.file_code, p.page_no,
       COALESCE(f.fonds, '') COLLATE "C" AS fonds,
       sohoa_v1_document(p.path, p.uri, p.page_no) COLLATE "C" AS document
FROM pages p LEFT JOIN files f USING (site_id, file_code);

DO $$
DECLARE
    r record;
BEGIN
    SELECT site_id, fonds, file_code, document, array_agg(page_no ORDER BY page_no) AS nos
    INTO r FROM v1_pages GROUP BY 1, 2, 3, 4 HAVING count(*) > 1 LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'migration 005: pages % of file %/%/% are all named by document %; '
            'rename one on disk, rescan it, and migrate again (nothing was changed)',
            r.nos, r.site_id, r.fonds, r.file_code, r.document;
    END IF;
END
$$;

-- --- pages, their revisions, removals and checks -----------------------------------------------

CREATE TABLE pages_v2 (
    site_id          text COLLATE "C" NOT NULL,
    fonds            text COLLATE "C" NOT NULL,
    file_code        text COLLATE "C" NOT NULL,
    document         text COLLATE "C" NOT NULL,  -- file name in the file folder (NFC)
    page_index       integer NOT NULL,           -- 1-based page of the document
    number           integer,                    -- the page number the name claims (one-page documents)
    document_pages   integer NOT NULL,
    revision         integer NOT NULL,
    sha256           text COLLATE "C" NOT NULL,  -- the page's content digest
    document_sha256  text COLLATE "C" NOT NULL,  -- the document file's SHA-256
    uri              text NOT NULL,
    path             text NOT NULL DEFAULT '',   -- the document's path as spelled on disk
    size_bytes       bigint NOT NULL,
    media_type       text NOT NULL,
    scanned_at       timestamptz NOT NULL,   -- time of the current revision
    first_scanned_at timestamptz NOT NULL,   -- time of the first revision seen: counts the page's day
    scan_day         date NOT NULL,          -- first_scanned_at in the site's time zone
    check_passed     boolean,                -- the latest check of the current revision (NULL: none)
    width_mm         double precision,       -- physical size, from that check
    height_mm        double precision,
    removed_at       timestamptz,            -- a PageRemoved of this revision's content
    removed          boolean GENERATED ALWAYS AS (removed_at IS NOT NULL) STORED,
    -- No foreign key to files: the applier writes the file row first in the same statement
    -- sequence, and a per-row FK check would cost a quarter of the page write.
    PRIMARY KEY (site_id, fonds, file_code, document, page_index)
);
INSERT INTO pages_v2 (site_id, fonds, file_code, document, page_index, number, document_pages,
                      revision, sha256, document_sha256, uri, path, size_bytes, media_type,
                      scanned_at, first_scanned_at, scan_day, check_passed, removed_at)
SELECT m.site_id, m.fonds, m.file_code, m.document, 1, p.page_no, 1, p.revision, p.sha256,
       p.sha256, p.uri, p.path, p.size_bytes, p.media_type, p.scanned_at, p.first_scanned_at,
       p.scan_day, p.check_passed, p.removed_at
FROM pages p JOIN v1_pages m USING (site_id, file_code, page_no);

CREATE TABLE page_revisions_v2 (
    site_id         text COLLATE "C" NOT NULL,
    fonds           text COLLATE "C" NOT NULL,
    file_code       text COLLATE "C" NOT NULL,
    document        text COLLATE "C" NOT NULL,
    page_index      integer NOT NULL,
    revision        integer NOT NULL,
    number          integer,
    document_pages  integer NOT NULL,
    sha256          text COLLATE "C" NOT NULL,
    document_sha256 text COLLATE "C" NOT NULL,
    uri             text NOT NULL,
    path            text NOT NULL DEFAULT '',
    size_bytes      bigint NOT NULL,
    media_type      text NOT NULL,
    scanned_at      timestamptz NOT NULL,
    event_id        text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, fonds, file_code, document, page_index, revision)
);
INSERT INTO page_revisions_v2
SELECT r.site_id, COALESCE(m.fonds, f.fonds, ''),  r.file_code,
       COALESCE(m.document, sohoa_v1_document(r.path, r.uri, r.page_no)), 1, r.revision,
       r.page_no, 1, r.sha256, r.sha256, r.uri, r.path, r.size_bytes, r.media_type,
       r.scanned_at, r.event_id
FROM page_revisions r
LEFT JOIN v1_pages m USING (site_id, file_code, page_no)
LEFT JOIN files f USING (site_id, file_code);

-- PageRemoved facts: a removal of the revision with this digest, at or before removed_at.
CREATE TABLE page_removals_v2 (
    site_id     text COLLATE "C" NOT NULL,
    fonds       text COLLATE "C" NOT NULL,
    file_code   text COLLATE "C" NOT NULL,
    document    text COLLATE "C" NOT NULL,
    page_index  integer NOT NULL,
    sha256      text COLLATE "C" NOT NULL,
    removed_at  timestamptz NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, fonds, file_code, document, page_index, sha256)
);
INSERT INTO page_removals_v2
SELECT r.site_id, COALESCE(m.fonds, f.fonds, ''), r.file_code,
       COALESCE(m.document, r.page_no::text), 1, r.sha256, r.removed_at, r.event_id
FROM page_removals r
LEFT JOIN v1_pages m USING (site_id, file_code, page_no)
LEFT JOIN files f USING (site_id, file_code);

-- Every check is kept (004); the check of a page revision is its latest by (checked_at,
-- event_id), which the key's order serves.
CREATE TABLE page_checks_v2 (
    site_id     text COLLATE "C" NOT NULL,
    fonds       text COLLATE "C" NOT NULL,
    file_code   text COLLATE "C" NOT NULL,
    document    text COLLATE "C" NOT NULL,
    page_index  integer NOT NULL,
    revision    integer NOT NULL,
    sha256      text COLLATE "C" NOT NULL,
    passed      boolean NOT NULL,
    failed      text[] NOT NULL DEFAULT '{}',
    checks      json NOT NULL,
    width_mm    double precision,
    height_mm   double precision,
    checked_at  timestamptz NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, fonds, file_code, document, page_index, revision, checked_at, event_id)
);
INSERT INTO page_checks_v2
SELECT k.site_id, m.fonds, k.file_code, m.document, 1, k.revision, k.sha256, k.passed,
       k.failed, k.checks, NULL, NULL, k.checked_at, k.event_id
FROM page_checks k JOIN v1_pages m USING (site_id, file_code, page_no);

-- A version-1 check names its page by number only; one whose page has not arrived waits here
-- and joins page_checks when a page of its file with that number is scanned.
CREATE TABLE legacy_page_checks (
    site_id     text COLLATE "C" NOT NULL,
    fonds       text COLLATE "C" NOT NULL,
    file_code   text COLLATE "C" NOT NULL,
    number      integer NOT NULL,
    revision    integer NOT NULL,
    sha256      text COLLATE "C" NOT NULL,
    passed      boolean NOT NULL,
    failed      text[] NOT NULL DEFAULT '{}',
    checks      json NOT NULL,
    width_mm    double precision,
    height_mm   double precision,
    checked_at  timestamptz NOT NULL,
    event_id    text COLLATE "C" PRIMARY KEY
);
INSERT INTO legacy_page_checks
SELECT k.site_id, COALESCE(f.fonds, ''), k.file_code, k.page_no, k.revision, k.sha256,
       k.passed, k.failed, k.checks, NULL, NULL, k.checked_at, k.event_id
FROM page_checks k LEFT JOIN files f USING (site_id, file_code)
WHERE NOT EXISTS (SELECT 1 FROM v1_pages m WHERE m.site_id = k.site_id
                    AND m.file_code = k.file_code AND m.page_no = k.page_no);

DROP TABLE pages, page_revisions, page_removals, page_checks;
ALTER TABLE pages_v2 RENAME TO pages;
ALTER TABLE pages RENAME CONSTRAINT pages_v2_pkey TO pages_pkey;
CREATE INDEX pages_site_day_idx ON pages (site_id, scan_day);
ALTER TABLE page_revisions_v2 RENAME TO page_revisions;
ALTER TABLE page_revisions RENAME CONSTRAINT page_revisions_v2_pkey TO page_revisions_pkey;
ALTER TABLE page_removals_v2 RENAME TO page_removals;
ALTER TABLE page_removals RENAME CONSTRAINT page_removals_v2_pkey TO page_removals_pkey;
ALTER TABLE page_checks_v2 RENAME TO page_checks;
ALTER TABLE page_checks RENAME CONSTRAINT page_checks_v2_pkey TO page_checks_pkey;

-- --- file histories: the fonds in their key, their JSON in its version-2 shape ------------------

ALTER TABLE file_assemblies
    ADD COLUMN fonds text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN documents integer NOT NULL DEFAULT 0,
    ADD COLUMN missing_pages jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN missing_documents jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN languages jsonb NOT NULL DEFAULT '{}';
-- As FileAssembledV1.upgrade: each page named by its URI's document, a duplicate group's page
-- by the document of the page with that number in the list (else the legacy name).
UPDATE file_assemblies a SET
    fonds = COALESCE((SELECT f.fonds FROM files f WHERE f.site_id = a.site_id
                        AND f.file_code = a.file_code), ''),
    page_list = (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
            'document', sohoa_v1_document('', e->>'uri', (e->>'page_no')::numeric::integer),
            'page_index', 1, 'number', (e->>'page_no')::numeric::integer, 'uri', e->>'uri',
            'document_sha256', e->>'sha256', 'sha256', e->>'sha256',
            'media_type', 'application/octet-stream',
            'revision', COALESCE((e->>'revision')::numeric::integer, 1)) ORDER BY o), '[]')
        FROM jsonb_array_elements(a.page_list) WITH ORDINALITY x(e, o)),
    duplicate_content = (
        SELECT COALESCE(jsonb_agg((
            SELECT COALESCE(jsonb_agg(jsonb_build_object('document', COALESCE(
                (SELECT sohoa_v1_document('', e->>'uri', (e->>'page_no')::numeric::integer)
                 FROM jsonb_array_elements(a.page_list) WITH ORDINALITY x(e, o)
                 WHERE (e->>'page_no')::numeric = n::numeric ORDER BY o DESC LIMIT 1),
                chr(31) || 'v1:' || n::numeric::integer), 'page_index', 1) ORDER BY o2), '[]')
            FROM jsonb_array_elements_text(g) WITH ORDINALITY y(n, o2)) ORDER BY o1), '[]')
        FROM jsonb_array_elements(a.duplicate_content) WITH ORDINALITY z(g, o1));
UPDATE file_assemblies a SET documents = (
    SELECT count(DISTINCT e->>'document') FROM jsonb_array_elements(a.page_list) e);
ALTER TABLE file_assemblies DROP CONSTRAINT file_assemblies_pkey,
    ADD PRIMARY KEY (site_id, fonds, file_code, revision);

-- As OcrCompletedV1.upgrade: a page of a version-1 OCR is named by number only.
ALTER TABLE ocr_results ADD COLUMN fonds text COLLATE "C" NOT NULL DEFAULT '';
UPDATE ocr_results o SET
    fonds = COALESCE((SELECT f.fonds FROM files f WHERE f.site_id = o.site_id
                        AND f.file_code = o.file_code), ''),
    pages = CASE WHEN o.pages IS NULL OR jsonb_typeof(o.pages) <> 'array' THEN o.pages ELSE (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
            'document', chr(31) || 'v1:' || (e->>'page_no')::numeric::integer, 'page_index', 1,
            'chars', (e->>'chars')::numeric::integer,
            'mean_confidence', e->'mean_confidence') ORDER BY i), '[]')
        FROM jsonb_array_elements(o.pages) WITH ORDINALITY x(e, i)) END;
ALTER TABLE ocr_results DROP CONSTRAINT ocr_results_pkey,
    ADD PRIMARY KEY (site_id, fonds, file_code, revision);

-- As FileVerdictV1.upgrade: a reason's page number is a claimed number.
ALTER TABLE verdicts ADD COLUMN fonds text COLLATE "C" NOT NULL DEFAULT '';
UPDATE verdicts v SET
    fonds = COALESCE((SELECT f.fonds FROM files f WHERE f.site_id = v.site_id
                        AND f.file_code = v.file_code), ''),
    reasons = (
        SELECT COALESCE(jsonb_agg(jsonb_build_object(
            'document', NULL, 'page_index', NULL, 'position', NULL,
            'number', (e->>'page_no')::numeric::integer, 'reason', e->>'reason') ORDER BY i),
            '[]')
        FROM jsonb_array_elements(v.reasons) WITH ORDINALITY x(e, i));
DROP INDEX verdicts_file_idx;
CREATE INDEX verdicts_file_idx ON verdicts (site_id, fonds, file_code);

-- --- the audit log names pages as the events do -------------------------------------------------

ALTER TABLE audit_log RENAME COLUMN page_no TO number;
ALTER TABLE audit_log ADD COLUMN fonds text COLLATE "C", ADD COLUMN document text COLLATE "C",
    ADD COLUMN page_index integer;
UPDATE audit_log a SET fonds = m.fonds, document = m.document, page_index = 1
FROM v1_pages m
WHERE a.number IS NOT NULL AND m.site_id = a.site_id AND m.file_code = a.file_code
  AND m.page_no = a.number;
UPDATE audit_log a SET fonds = f.fonds
FROM files f
WHERE a.fonds IS NULL AND a.file_code IS NOT NULL AND f.site_id = a.site_id
  AND f.file_code = a.file_code;

-- --- files: (site_id, fonds, file_code), with their documents ----------------------------------

ALTER TABLE files ALTER COLUMN fonds TYPE text COLLATE "C";
ALTER TABLE files DROP CONSTRAINT files_pkey, ADD PRIMARY KEY (site_id, fonds, file_code);
ALTER TABLE files
    ADD COLUMN documents integer NOT NULL DEFAULT 0,  -- distinct documents holding a current page
    ADD COLUMN manifest_documents jsonb;              -- the manifest's documents, in order
UPDATE files SET manifest_documents = '[]' WHERE manifest_at IS NOT NULL;

-- A file's state is a function of its stored facts, never of the order they came in: a
-- verdict of the current (or a newer) assembly wins, then OCR of it, then page checks, then
-- assembly. The applier sets it with this function too (consumers.apply.sql_files.FILE_STATE).
CREATE OR REPLACE FUNCTION sohoa_file_state(f files) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN f.verdict IS NOT NULL AND f.verdict_revision >= COALESCE(f.assembled_revision, 0)
            THEN f.verdict
        WHEN f.ocr_status IS NOT NULL AND f.ocr_revision >= COALESCE(f.assembled_revision, 0)
            THEN CASE f.ocr_status WHEN 'completed' THEN 'ocr_done' ELSE 'ocr_failed' END
        WHEN f.assembled_revision IS NOT NULL AND f.pages > 0 AND f.checked_pages >= f.pages
            THEN 'checked'
        WHEN f.assembled_revision IS NOT NULL THEN 'assembled'
        WHEN f.closed_at IS NOT NULL THEN 'closed'
        ELSE 'scanning' END
$$;

-- The applier's rules (consumers.apply.sql_files: FILE_PAGES, FILE_STATE, DAILY), for every
-- file and day.
UPDATE files f SET pages = a.n, documents = a.documents, last_page_at = a.last_at,
                   checked_pages = a.checked, qc_failed_pages = a.failed
FROM (SELECT f2.site_id, f2.fonds, f2.file_code,
             count(p.*) FILTER (WHERE NOT p.removed) AS n,
             count(DISTINCT p.document) FILTER (WHERE NOT p.removed) AS documents,
             max(p.scanned_at) FILTER (WHERE NOT p.removed) AS last_at,
             count(p.check_passed) FILTER (WHERE NOT p.removed) AS checked,
             count(p.*) FILTER (WHERE NOT p.removed AND NOT p.check_passed) AS failed
      FROM files f2 LEFT JOIN pages p USING (site_id, fonds, file_code)
      GROUP BY f2.site_id, f2.fonds, f2.file_code) a
WHERE f.site_id = a.site_id AND f.fonds = a.fonds AND f.file_code = a.file_code
  AND (f.pages, f.documents, f.last_page_at, f.checked_pages, f.qc_failed_pages)
      IS DISTINCT FROM (a.n, a.documents, a.last_at, a.checked, a.failed);
UPDATE files f SET state = sohoa_file_state(f);

DELETE FROM daily_progress;
INSERT INTO daily_progress (site_id, day, pages_scanned, pages_accepted, files_accepted)
SELECT site_id, day, sum(scanned), sum(accepted_pages), sum(accepted_files)
FROM (
    SELECT site_id, scan_day AS day, count(*) AS scanned, 0 AS accepted_pages,
           0 AS accepted_files
    FROM pages WHERE NOT removed GROUP BY site_id, scan_day
    UNION ALL
    SELECT f.site_id, (f.verdict_at AT TIME ZONE st.timezone)::date, 0,
           sum(COALESCE(f.pages_accepted, 0)), count(*)
    FROM files f JOIN sites st USING (site_id)
    WHERE f.state = 'accepted' GROUP BY 1, 2
) x
GROUP BY site_id, day
HAVING sum(scanned) > 0 OR sum(accepted_pages) > 0 OR sum(accepted_files) > 0;

-- --- views and grants ---------------------------------------------------------------------------

CREATE OR REPLACE VIEW v_site_progress AS
SELECT s.site_id, s.name, s.unit, s.contractor, s.target_pages, s.target_files, s.deadline,
       s.timezone, s.auto_created,
       COALESCE(f.pages_scanned, 0)::bigint   AS pages_scanned,
       COALESCE(f.pages_accepted, 0)::bigint  AS pages_accepted,
       COALESCE(f.files_total, 0)::bigint     AS files_total,
       COALESCE(f.files_accepted, 0)::bigint  AS files_accepted,
       COALESCE(f.qc_failed_pages, 0)::bigint AS qc_failed_pages,
       CASE WHEN s.target_pages IS NULL THEN NULL
            ELSE GREATEST(s.target_pages - COALESCE(f.pages_scanned, 0), 0) END AS remaining_pages,
       f.last_page_at,
       h.last_heartbeat_at, h.agent_version, h.outbox_depth, h.oldest_unsent_age_s,
       COALESCE(f.documents, 0)::bigint       AS documents_scanned,
       COALESCE(f.checked_pages, 0)::bigint   AS checked_pages
FROM sites s
LEFT JOIN (
    SELECT site_id,
           sum(pages) AS pages_scanned,
           sum(CASE WHEN state = 'accepted' THEN COALESCE(pages_accepted, 0) ELSE 0 END)
               AS pages_accepted,
           count(*) AS files_total,
           count(*) FILTER (WHERE state = 'accepted') AS files_accepted,
           sum(qc_failed_pages) AS qc_failed_pages,
           max(last_page_at) AS last_page_at,
           sum(documents) AS documents,
           sum(checked_pages) AS checked_pages
    FROM files GROUP BY site_id
) f ON f.site_id = s.site_id
LEFT JOIN site_heartbeats h ON h.site_id = s.site_id;

CREATE OR REPLACE VIEW v_files_by_state AS
SELECT site_id, state, count(*)::bigint AS files, sum(pages)::bigint AS pages,
       sum(documents)::bigint AS documents
FROM files GROUP BY site_id, state;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO sohoa_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO sohoa_reader;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM sohoa_reader;
