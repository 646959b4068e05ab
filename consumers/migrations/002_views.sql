-- Read-only views for Grafana panels and reports (columns documented in docs/architecture.md).

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
       h.last_heartbeat_at, h.agent_version, h.outbox_depth, h.oldest_unsent_age_s
FROM sites s
LEFT JOIN (
    SELECT site_id,
           sum(pages) AS pages_scanned,
           sum(CASE WHEN state = 'accepted' THEN COALESCE(pages_accepted, 0) ELSE 0 END)
               AS pages_accepted,
           count(*) AS files_total,
           count(*) FILTER (WHERE state = 'accepted') AS files_accepted,
           sum(qc_failed_pages) AS qc_failed_pages,
           max(last_page_at) AS last_page_at
    FROM files GROUP BY site_id
) f ON f.site_id = s.site_id
LEFT JOIN site_heartbeats h ON h.site_id = s.site_id;

CREATE OR REPLACE VIEW v_daily_progress AS
SELECT d.site_id, s.unit, s.contractor, d.day, d.pages_scanned, d.pages_accepted,
       d.files_accepted,
       sum(d.pages_scanned) OVER (PARTITION BY d.site_id ORDER BY d.day)::bigint
           AS pages_scanned_cumulative
FROM daily_progress d JOIN sites s ON s.site_id = d.site_id;

CREATE OR REPLACE VIEW v_files_by_state AS
SELECT site_id, state, count(*)::bigint AS files, sum(pages)::bigint AS pages
FROM files GROUP BY site_id, state;

CREATE OR REPLACE VIEW v_rescan_reasons AS
SELECT v.site_id, s.contractor, v.verdict, r.reason, v.occurred_at,
       (v.occurred_at AT TIME ZONE s.timezone)::date AS day,
       count(*)::bigint AS occurrences
FROM verdicts v
JOIN sites s ON s.site_id = v.site_id
CROSS JOIN LATERAL (
    SELECT COALESCE(x->>'reason', '(không rõ)') AS reason
    FROM jsonb_array_elements(CASE WHEN jsonb_array_length(v.reasons) = 0
                                   THEN '[{}]'::jsonb ELSE v.reasons END) x
) r
WHERE v.verdict <> 'accepted'
GROUP BY v.site_id, s.contractor, v.verdict, r.reason, v.occurred_at, s.timezone;

CREATE OR REPLACE VIEW v_dead_letters AS
SELECT source, reason_class AS reason, site_id, count(*)::bigint AS dead_letters,
       max(occurred_at) AS last_at
FROM dead_letters GROUP BY source, reason_class, site_id;
