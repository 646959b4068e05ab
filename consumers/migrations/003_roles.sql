-- Two roles: sohoa_writer (the consumer, migrations) and sohoa_reader (Grafana, reports).
-- Created with LOGIN and no password: the local stack uses trust auth on loopback; in
-- production set a password (ALTER ROLE ... PASSWORD) or use certificate/peer auth.
-- Roles are cluster-wide, so creation tolerates a role made by another database's migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sohoa_writer') THEN
        BEGIN
            CREATE ROLE sohoa_writer LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sohoa_reader') THEN
        BEGIN
            CREATE ROLE sohoa_reader LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO sohoa_writer, sohoa_reader;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO sohoa_writer;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO sohoa_writer;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO sohoa_reader;
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public FROM sohoa_reader;
