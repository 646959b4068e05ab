-- The grant sweep: run by consumers/db.py in the transaction of every migration, after it, so
-- whatever a migration made, renamed or replaced carries the roles' privileges (the default
-- privileges of 006 cover tables made outside a migration run). Not a numbered migration.
--   sohoa_reader: SELECT on every table and view, nothing else (status, reports, boards).
--   sohoa_writer: what the consumer and plan imports do, derived from consumers/apply.py and
--     consumers/campaign.py — SELECT everywhere; INSERT and UPDATE (upserts) on tables;
--     INSERT only on the history it appends to; DELETE only where it recounts; never
--     TRUNCATE, never a write through a view (simple views are updatable), never
--     schema_migrations. Temporary tables need TEMPORARY on the database (006).
DO $sweep$
DECLARE
    -- Appended to, never rewritten or erased: the audit trail and the histories.
    append_only CONSTANT text[] := ARRAY['audit_log', 'verdicts', 'dead_letters', 'page_checks',
                                         'deliverable_events'];
    -- Rows deleted by the applier and plan imports (days recounted from the pages; version-1
    -- checks placed on their page once it arrives; a calendar import with --replace).
    deletes_from CONSTANT text[] := ARRAY['daily_progress', 'legacy_page_checks',
                                          'calendar_days'];
    rel record;
BEGIN
    IF (SELECT count(*) FROM pg_roles
        WHERE rolname IN ('sohoa_writer', 'sohoa_reader')) < 2 THEN
        RETURN;  -- migrations before 003 (which makes the roles)
    END IF;
    FOR rel IN
        SELECT c.oid::regclass AS name, c.relname, c.relkind
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    LOOP
        EXECUTE format('REVOKE ALL ON %s FROM sohoa_writer, sohoa_reader', rel.name);
        EXECUTE format('GRANT SELECT ON %s TO sohoa_writer, sohoa_reader', rel.name);
        CONTINUE WHEN rel.relkind NOT IN ('r', 'p') OR rel.relname = 'schema_migrations';
        IF rel.relname = ANY (append_only) THEN
            EXECUTE format('GRANT INSERT ON %s TO sohoa_writer', rel.name);
        ELSIF rel.relname = ANY (deletes_from) THEN
            EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %s TO sohoa_writer', rel.name);
        ELSE
            EXECUTE format('GRANT INSERT, UPDATE ON %s TO sohoa_writer', rel.name);
        END IF;
    END LOOP;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM sohoa_writer, sohoa_reader;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO sohoa_writer;
    GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO sohoa_reader;
END
$sweep$;
