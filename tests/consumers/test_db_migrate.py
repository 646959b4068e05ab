"""Migrations: numbered, idempotent, serialised by an advisory lock; roles and views."""

from __future__ import annotations

import threading

import psycopg
import pytest

from consumers.db import migrate, migration_files
from tests.support.procs import run_sohoa
from tests.support.progress_store import scalar

pytestmark = pytest.mark.integration


def test_migrations_are_numbered_and_unique() -> None:
    files = migration_files()
    assert [v for v, _, _ in files] == sorted({v for v, _, _ in files})
    assert files[0][1].startswith("001_")


def test_migrate_twice_and_concurrently_applies_each_once(stack) -> None:
    dsn = stack.new_database("mig")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn}
    results: list[list[str]] = []

    def run() -> None:
        with psycopg.connect(dsn) as conn:
            results.append(migrate(conn))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = [name for r in results for name in r]
    assert sorted(applied) == sorted(n for _, n, _ in migration_files())
    out = run_sohoa(["db", "migrate"], env)
    assert out.returncode == 0 and "mới nhất" in out.stdout
    with psycopg.connect(dsn) as conn:
        n = scalar(conn, "SELECT count(*) FROM schema_migrations")
        assert n == len(migration_files())
        views = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = 'public'")}
        assert {"v_site_progress", "v_daily_progress", "v_files_by_state",
                "v_rescan_reasons", "v_dead_letters"} <= views


def test_reader_role_reads_and_cannot_write(stack) -> None:
    dsn = stack.new_database("roles")
    with psycopg.connect(dsn) as conn:
        migrate(conn)
    reader = psycopg.conninfo.make_conninfo(dsn, user="sohoa_reader")
    writer = psycopg.conninfo.make_conninfo(dsn, user="sohoa_writer")
    with psycopg.connect(writer, autocommit=True) as conn:
        conn.execute("INSERT INTO sites (site_id) VALUES ('xa-w')")
    with psycopg.connect(reader, autocommit=True) as conn:
        assert conn.execute("SELECT site_id FROM v_site_progress").fetchall() == [("xa-w",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO sites (site_id) VALUES ('xa-r')")
