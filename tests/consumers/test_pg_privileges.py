"""Least privilege in PostgreSQL: password (SCRAM) logins, no superuser client, the writer
appends to the audit trail but never rewrites it, the reader only reads, and what a later
migration adds gets the same grants (default privileges + the grant sweep)."""

from __future__ import annotations

import stat
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from consumers import db as cdb
from infra.postgres import APP_ROLES, pgpass_path
from tests.support.progress_store import as_role, scalar

pytestmark = pytest.mark.integration
APPEND_ONLY = ("audit_log", "verdicts", "dead_letters", "page_checks",
               "deliverable_events")


@pytest.fixture
def migrated(stack) -> str:
    """The owner's DSN of a fresh, migrated database."""
    dsn = stack.new_database("priv")
    with psycopg.connect(dsn, autocommit=True) as conn:
        cdb.migrate(conn)
    return dsn


def _tables(conn: psycopg.Connection, kinds: str = "rp") -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = ANY(%s) ORDER BY 1", (list(kinds),))]


def _refused(conn: psycopg.Connection, statement: sql.SQL | sql.Composed | str) -> bool:
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        return True
    return False


def test_stack_roles_log_in_by_password_and_none_is_a_superuser(stack) -> None:
    passfile = pgpass_path(stack.local.state_dir)
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    assert stat.S_IMODE(passfile.parent.stat().st_mode) == 0o700
    with psycopg.connect(stack.pg_dsn) as conn:
        roles: dict[str, bool] = dict(conn.execute(
            "SELECT rolname, rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls "
            "FROM pg_roles WHERE rolname = ANY(%s)", (list(APP_ROLES),)).fetchall())
        hba = conn.execute("SELECT DISTINCT type, auth_method FROM pg_hba_file_rules "
                           "WHERE 'all' = ANY(user_name)").fetchall()
    assert roles == dict.fromkeys(APP_ROLES, False)
    assert set(hba) == {("local", "scram-sha-256"), ("host", "scram-sha-256")}
    host, port = "127.0.0.1", stack.local.pg.stack.postgres_port
    for role in APP_ROLES:
        # Without the password file: refused, over TCP and over the socket alike.
        for where in (f"host={host} port={port}",
                      f"host={stack.local.pg.sock_dir} port={port}"):
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(f"{where} dbname=sohoa user={role} passfile=/nonexistent",
                                connect_timeout=5)
        with psycopg.connect(f"host={host} port={port} dbname=sohoa user={role} "
                             f"passfile={Path(passfile)}", connect_timeout=5) as conn:
            method = scalar(conn, "SELECT current_user")
            assert method == role
    # The superuser has no password and is refused over TCP whatever it offers.
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host={host} port={port} dbname=postgres user=postgres "
                        "password=anything", connect_timeout=5)


def test_writer_appends_to_the_audit_trail_but_never_rewrites_it(migrated) -> None:
    writer = as_role(migrated, "sohoa_writer")
    with psycopg.connect(writer, autocommit=True) as conn:
        assert scalar(conn, "SELECT current_user") == "sohoa_writer"
        conn.execute("INSERT INTO audit_log (event_id, action) VALUES ('e1', 'test')")
        for table in APPEND_ONLY:
            t = sql.Identifier(table)
            assert _refused(conn, sql.SQL("UPDATE {} SET site_id = site_id").format(t)), table
            assert _refused(conn, sql.SQL("DELETE FROM {}").format(t)), table
            assert _refused(conn, sql.SQL("TRUNCATE {}").format(t)), table
        assert scalar(conn, "SELECT count(*) FROM audit_log") == 1
        # Upserts elsewhere, deletes only where days are recounted; no DDL, no TRUNCATE.
        conn.execute("INSERT INTO sites (site_id) VALUES ('xa-w') ON CONFLICT (site_id) "
                     "DO UPDATE SET name = 'x'")
        assert _refused(conn, "DELETE FROM sites")
        assert _refused(conn, "TRUNCATE daily_progress")
        conn.execute("DELETE FROM daily_progress")
        assert _refused(conn, "CREATE TABLE public.mine (x int)")
        assert _refused(conn, "DELETE FROM schema_migrations")
        # Simple views are updatable: the writer holds no write privilege on any view.
        assert conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'v' AND has_table_privilege("
            "c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')").fetchall() == []
        # The applier stages batches in temporary tables.
        conn.execute("CREATE TEMP TABLE scratch (x int)")


def test_reader_reads_everything_and_writes_nothing(migrated) -> None:
    reader = as_role(migrated, "sohoa_reader")
    with psycopg.connect(migrated, autocommit=True) as owner:
        tables = _tables(owner)
        views = _tables(owner, "v")
    assert "audit_log" in tables and "v_site_progress" in views
    with psycopg.connect(reader, autocommit=True) as conn:
        for rel in tables + views:
            conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(rel)))
        for table in tables:
            t = sql.Identifier(table)
            for stmt in ("INSERT INTO {} DEFAULT VALUES", "UPDATE {} SET {} = NULL",
                         "DELETE FROM {}", "TRUNCATE {}"):
                col = scalar(
                    conn, "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass "
                    "AND attnum > 0 AND NOT attisdropped ORDER BY attnum LIMIT 1",
                    (table,))
                assert _refused(conn, sql.SQL(stmt).format(t, sql.Identifier(col))), \
                    (table, stmt)
        assert _refused(conn, "CREATE TEMP TABLE scratch (x int)")
        assert _refused(conn, "CREATE TABLE public.mine (x int)")


def test_tables_of_later_migrations_get_the_grants(migrated, monkeypatch) -> None:
    # A table the owner makes by hand (no sweep): the default privileges alone.
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE TABLE by_hand (x int)")
    with psycopg.connect(as_role(migrated, "sohoa_reader"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM by_hand").fetchone() == (0,)
    # A later migration that adds a table and a view and replaces the audit log.
    later = (999, "999_later.sql",
             "CREATE TABLE page_identities (id bigserial PRIMARY KEY, note text);"
             "CREATE VIEW v_identities AS SELECT id, note FROM page_identities;"
             "ALTER TABLE audit_log RENAME TO audit_log_old;"
             "CREATE TABLE audit_log (LIKE audit_log_old INCLUDING ALL);")
    shipped = cdb.migration_files()
    monkeypatch.setattr(cdb, "migration_files", lambda: [*shipped, later])
    with psycopg.connect(migrated, autocommit=True) as conn:
        assert cdb.migrate(conn) == ["999_later.sql"]
    with psycopg.connect(as_role(migrated, "sohoa_writer"), autocommit=True) as conn:
        conn.execute("INSERT INTO page_identities (note) VALUES ('a')")  # sequence too
        conn.execute("UPDATE page_identities SET note = 'b'")
        conn.execute("INSERT INTO audit_log (event_id, action) VALUES ('e', 'a')")
        assert _refused(conn, "UPDATE audit_log SET detail = 'x'")
        assert _refused(conn, "UPDATE v_identities SET note = 'c'")
    with psycopg.connect(as_role(migrated, "sohoa_reader"), autocommit=True) as conn:
        assert conn.execute("SELECT note FROM v_identities").fetchall() == [("b",)]
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)
        assert _refused(conn, "INSERT INTO page_identities (note) VALUES ('r')")


def test_writer_may_run_migrate_only_when_nothing_is_pending(stack, migrated) -> None:
    with psycopg.connect(as_role(migrated, "sohoa_writer")) as conn:
        assert cdb.migrate(conn) == []  # `sohoa consume --migrate` on a current schema
    fresh = stack.new_database("priv_fresh")
    with psycopg.connect(fresh, autocommit=True) as owner:
        owner.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    with psycopg.connect(as_role(fresh, "sohoa_writer")) as conn, \
            pytest.raises(cdb.MigrationsPending, match="owner"):
        cdb.migrate(conn)
