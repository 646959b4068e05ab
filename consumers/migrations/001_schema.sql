-- sohoa progress store: base tables.
-- Identifier columns use COLLATE "C": byte order is what a key needs, and it keeps every btree
-- comparison off the locale's strcoll (several times faster on the hot upserts).
-- Every table that events touch is written with commutative merges (max revision, latest
-- occurred_at, least first-seen time), so replays, duplicates and out-of-order arrival end in
-- the same rows as an orderly stream.

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id   bigserial PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    start_date    date,
    source        text,
    imported_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sites (
    site_id       text COLLATE "C" PRIMARY KEY,
    name          text,
    unit          text,
    contractor    text,
    campaign_id   bigint REFERENCES campaigns(campaign_id),
    target_pages  integer CHECK (target_pages IS NULL OR target_pages >= 0),
    target_files  integer CHECK (target_files IS NULL OR target_files >= 0),
    deadline      date,
    timezone      text NOT NULL DEFAULT 'Asia/Ho_Chi_Minh',
    work_start    time NOT NULL DEFAULT '07:30',
    work_end      time NOT NULL DEFAULT '17:00',
    workdays      smallint[] NOT NULL DEFAULT '{0,1,2,3,4}',
    auto_created  boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sites_contractor_idx ON sites (contractor);

CREATE TABLE IF NOT EXISTS files (
    site_id             text COLLATE "C" NOT NULL REFERENCES sites(site_id),
    file_code           text COLLATE "C" NOT NULL,
    fonds               text NOT NULL DEFAULT '',
    state               text NOT NULL DEFAULT 'scanning',
    pages               integer NOT NULL DEFAULT 0,   -- current, not removed pages
    qc_failed_pages     integer NOT NULL DEFAULT 0,   -- current pages whose check failed
    checked_pages       integer NOT NULL DEFAULT 0,   -- current pages with a check
    opened              boolean NOT NULL DEFAULT false, -- a PageScanned or FileManifest was seen
    first_seen_at       timestamptz,
    last_page_at        timestamptz,
    -- manifest (hoso.json)
    title               text,
    expected_pages      integer,
    classification      text,
    priority            smallint,
    start_date          text,
    end_date            text,
    metadata            jsonb,
    manifest_at         timestamptz,
    -- closing
    closed_at           timestamptz,
    closed_reason       text,
    -- current assembly
    assembled_revision  integer,
    assembled_at        timestamptz,
    assembled_pages     integer,
    gaps                integer[],
    count_mismatch      boolean,
    -- current OCR
    ocr_revision        integer,
    ocr_status          text,      -- completed | failed
    ocr_at              timestamptz,
    -- current verdict
    verdict_revision    integer,
    verdict             text,
    verdict_at          timestamptz,
    verdict_event_id    text COLLATE "C",
    pages_total         integer,
    pages_accepted      integer,
    PRIMARY KEY (site_id, file_code)
);
CREATE INDEX IF NOT EXISTS files_state_idx ON files (site_id, state);

-- Every revision of every page; the highest revision is the current page.
CREATE TABLE IF NOT EXISTS page_revisions (
    site_id      text COLLATE "C" NOT NULL,
    file_code    text COLLATE "C" NOT NULL,
    page_no      integer NOT NULL,
    revision     integer NOT NULL,
    sha256       text COLLATE "C" NOT NULL,
    uri          text NOT NULL,
    path         text NOT NULL DEFAULT '',
    size_bytes   bigint NOT NULL,
    media_type   text NOT NULL,
    scanned_at   timestamptz NOT NULL,
    event_id     text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, file_code, page_no, revision)
);

-- The current revision of each page (a cache of page_revisions + page_removals).
CREATE TABLE IF NOT EXISTS pages (
    site_id          text COLLATE "C" NOT NULL,
    file_code        text COLLATE "C" NOT NULL,
    page_no          integer NOT NULL,
    revision         integer NOT NULL,
    sha256           text COLLATE "C" NOT NULL,
    uri              text NOT NULL,
    path             text NOT NULL DEFAULT '',
    size_bytes       bigint NOT NULL,
    media_type       text NOT NULL,
    scanned_at       timestamptz NOT NULL,   -- time of the current revision
    first_scanned_at timestamptz NOT NULL,   -- time of the first revision seen: counts the page's day
    scan_day         date NOT NULL,          -- first_scanned_at in the site's time zone
    check_passed     boolean,                -- the check of the current revision (NULL: none)
    removed_at       timestamptz,            -- a PageRemoved of this revision's content
    removed          boolean GENERATED ALWAYS AS (removed_at IS NOT NULL) STORED,
    -- No foreign key to files: the applier writes the file row first in the same statement
    -- sequence, and a per-row FK check would cost a quarter of the page write.
    PRIMARY KEY (site_id, file_code, page_no)
);
CREATE INDEX IF NOT EXISTS pages_site_day_idx ON pages (site_id, scan_day);

-- PageRemoved facts: a removal of the revision with this sha256, at or before removed_at.
CREATE TABLE IF NOT EXISTS page_removals (
    site_id     text COLLATE "C" NOT NULL,
    file_code   text COLLATE "C" NOT NULL,
    page_no     integer NOT NULL,
    sha256      text COLLATE "C" NOT NULL,
    removed_at  timestamptz NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, file_code, page_no, sha256)
);

CREATE TABLE IF NOT EXISTS page_checks (
    site_id     text COLLATE "C" NOT NULL,
    file_code   text COLLATE "C" NOT NULL,
    page_no     integer NOT NULL,
    revision    integer NOT NULL,
    sha256      text COLLATE "C" NOT NULL,
    passed      boolean NOT NULL,
    failed      text[] NOT NULL DEFAULT '{}',
    checks      jsonb NOT NULL,
    checked_at  timestamptz NOT NULL,
    event_id    text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, file_code, page_no, revision)
);

CREATE TABLE IF NOT EXISTS file_assemblies (
    site_id        text COLLATE "C" NOT NULL,
    file_code      text COLLATE "C" NOT NULL,
    revision       integer NOT NULL,
    trigger        text NOT NULL,
    pages          integer NOT NULL,
    page_list      jsonb NOT NULL,
    gaps           integer[] NOT NULL DEFAULT '{}',
    duplicate_page_nos integer[] NOT NULL DEFAULT '{}',
    duplicate_content jsonb NOT NULL DEFAULT '[]',
    expected_pages integer,
    count_mismatch boolean NOT NULL DEFAULT false,
    classification text,
    assembled_at   timestamptz NOT NULL,
    event_id       text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, file_code, revision)
);

CREATE TABLE IF NOT EXISTS ocr_results (
    site_id        text COLLATE "C" NOT NULL,
    file_code      text COLLATE "C" NOT NULL,
    revision       integer NOT NULL,
    status         text NOT NULL CHECK (status IN ('completed', 'failed')),
    output_uri     text,
    output_sha256  text,
    text_uri       text,
    pages          jsonb,
    mean_confidence double precision,
    seconds        double precision,
    reason         text,
    attempts       integer,
    occurred_at    timestamptz NOT NULL,
    event_id       text COLLATE "C" NOT NULL,
    PRIMARY KEY (site_id, file_code, revision)
);

-- Verdict history: every FileVerdict (the current one is cached on files).
CREATE TABLE IF NOT EXISTS verdicts (
    event_id       text COLLATE "C" PRIMARY KEY,
    site_id        text COLLATE "C" NOT NULL,
    file_code      text COLLATE "C" NOT NULL,
    revision       integer NOT NULL,
    verdict        text NOT NULL,
    reasons        jsonb NOT NULL DEFAULT '[]',
    pages_total    integer NOT NULL,
    pages_accepted integer NOT NULL,
    occurred_at    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS verdicts_file_idx ON verdicts (site_id, file_code);
CREATE INDEX IF NOT EXISTS verdicts_time_idx ON verdicts (occurred_at);

CREATE TABLE IF NOT EXISTS site_heartbeats (
    site_id             text COLLATE "C" PRIMARY KEY,
    last_heartbeat_at   timestamptz NOT NULL,
    agent_version       text NOT NULL,
    outbox_depth        integer NOT NULL,
    oldest_unsent_age_s double precision NOT NULL,
    disk_free_bytes     bigint NOT NULL,
    roots               jsonb NOT NULL DEFAULT '[]',
    event_id            text COLLATE "C" NOT NULL
);

-- Per site and local day: recomputed from pages and files for the days a batch touches.
CREATE TABLE IF NOT EXISTS daily_progress (
    site_id         text COLLATE "C" NOT NULL,
    day             date NOT NULL,
    pages_scanned   integer NOT NULL DEFAULT 0,
    pages_accepted  integer NOT NULL DEFAULT 0,
    files_accepted  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day)
);
CREATE INDEX IF NOT EXISTS daily_progress_day_idx ON daily_progress (day);

CREATE TABLE IF NOT EXISTS dead_letters (
    dedup_key    text COLLATE "C" PRIMARY KEY,   -- event_id of the DeadLetter fact
    site_id      text COLLATE "C" NOT NULL DEFAULT 'unknown',
    source       text NOT NULL,
    topic        text,
    part         integer,
    "offset"     bigint,
    reason       text NOT NULL,
    reason_class text NOT NULL,
    payload      text NOT NULL DEFAULT '',
    occurred_at  timestamptz NOT NULL,
    stored_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dead_letters_time_idx ON dead_letters (occurred_at);

-- Where the consumer is: written in the same transaction as the batch it covers.
CREATE TABLE IF NOT EXISTS consumer_offsets (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    part         integer NOT NULL,
    next_offset  bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, part)
);

-- Audit log: one row per applied event (action = event type; also the dedup record) and one
-- per side effect worth explaining (action = e.g. 'site_auto_created').
CREATE TABLE IF NOT EXISTS audit_log (
    event_id     text COLLATE "C" NOT NULL,
    action       text COLLATE "C" NOT NULL,
    site_id      text COLLATE "C",
    file_code    text COLLATE "C",
    page_no      integer,
    detail       text,
    occurred_at  timestamptz,
    topic        text,
    part         integer,
    "offset"     bigint,
    applied_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, action)
);
-- Only the primary key: every applied event writes here, so each extra index is paid per event.
