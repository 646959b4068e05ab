-- Least privilege: the consumer connects as sohoa_writer, status/reports/boards as
-- sohoa_reader, migrations as the owner (see consumers/migrations/grants.sql for who may do
-- what on each table; it runs after this file in the same transaction).

-- Only the project's roles reach this database; the writer may make temporary tables (the
-- applier stages each batch in them), the reader may not.
DO $$
BEGIN
    EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO sohoa_writer',
                   current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sohoa_reader', current_database());
END
$$;
-- PostgreSQL < 15 lets everyone create objects in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO sohoa_writer, sohoa_reader;

-- Tables, views and sequences the owner makes from now on — in a later migration or by hand —
-- are readable by both roles and written by the writer as an ordinary table (the sweep then
-- narrows append-only tables and views).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO sohoa_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE ON TABLES TO sohoa_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO sohoa_writer;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON SEQUENCES TO sohoa_reader;
