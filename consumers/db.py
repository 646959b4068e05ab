"""PostgreSQL connections and the numbered SQL migrations (``consumers/migrations/NNN_*.sql``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from importlib import resources
from typing import Any

import psycopg

from sohoa.config import PostgresConfig

log = logging.getLogger(__name__)

# Any 64-bit constant: serialises concurrent `sohoa db migrate` runs on one database.
MIGRATION_LOCK_ID = 0x50A0_DB01

# Transaction advisory locks in the two-key space (class, key), apart from the one above.
# A batch holds PLAN_LOCK shared; a plan import takes it exclusive, so it waits for the batches
# in flight and the batches after it see the plan (time zones date pages and days).
PLAN_LOCK = (2, 0)
# One per site (key: hashtext(site_id)), exclusive, held by a batch from its daily recount to
# its commit: consumers of one group share sites and days.
SITE_DAYS_LOCK_CLASS = 1


def scalar(conn: psycopg.Connection, sql: str, params: Sequence[Any] | None = None) -> Any:
    """The first column of the one row ``sql`` returns (an aggregate, ``RETURNING``,
    ``to_regclass``); LookupError if it returns none."""
    row = conn.execute(sql, params).fetchone()
    if row is None:
        raise LookupError(f"no row from: {sql[:80]}")
    return row[0]


def connect(cfg: PostgresConfig, *, autocommit: bool = False, reader: bool = False,
            owner: bool = False, dsn: str | None = None) -> psycopg.Connection:
    """A connection as the writer (``postgres.dsn``), the reader (``reader``:
    ``postgres.reader_dsn``) or the owner (``owner``: ``postgres.owner_dsn``, migrations)."""
    if dsn is None:
        dsn = cfg.url
        chosen = cfg.reader_dsn if reader else cfg.owner_dsn if owner else None
        if chosen is not None:
            dsn = chosen.get_secret_value()
    return psycopg.connect(dsn, autocommit=autocommit,
                           connect_timeout=max(1, int(cfg.connect_timeout_s)))


def connect_retry(cfg: PostgresConfig, *, deadline_s: float | None = None,
                  **kw) -> psycopg.Connection:
    """Connect, waiting with backoff while PostgreSQL is down (restart, failover)."""
    delay = 0.2
    started = time.monotonic()
    while True:
        try:
            return connect(cfg, **kw)
        except psycopg.OperationalError as exc:
            if deadline_s is not None and time.monotonic() - started > deadline_s:
                raise
            log.warning("postgres unavailable, retrying",
                        extra={"error": str(exc).strip()[:200], "retry_in_s": delay})
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration shipped in the package, in order."""
    out = []
    for entry in resources.files("consumers.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql") or not name[:3].isdigit():
            continue
        out.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"duplicate migration numbers: {versions}")
    return out


class MigrationsPending(RuntimeError):
    """Migrations wait and this connection's role may not apply them (it is not the owner)."""


def pending_migrations(conn: psycopg.Connection) -> list[str]:
    """Names of the shipped migrations this database has not applied (read-only)."""
    if scalar(conn, "SELECT to_regclass('schema_migrations')") is None:
        return [name for _, name, _ in migration_files()]
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    return [name for version, name, _ in migration_files() if version not in done]


def grant_sweep_sql() -> str:
    return resources.files("consumers.migrations").joinpath("grants.sql").read_text(
        encoding="utf-8")


def migrate(conn: psycopg.Connection, *, upto: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered up to ``upto``, if given) under an advisory
    lock; return the names applied.

    Each migration runs in its own transaction with its bookkeeping row and the grant sweep
    (``migrations/grants.sql``: every table, view and sequence, whichever migration made or
    renamed it, gets the writer's and the reader's privileges), so a failed one leaves nothing
    half-done and a second run is a no-op. With nothing pending no DDL is issued, so the
    writer may call this (``sohoa consume --migrate``); with migrations pending, a role that
    may not create tables gets :class:`MigrationsPending`.
    """
    conn.autocommit = True
    if not pending_migrations(conn):
        return []
    applied_now: list[str] = []
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
    try:
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise MigrationsPending(
                f"migrations pending and role {conn.info.user!r} may not apply them: run "
                "`sohoa db migrate` as the owner (postgres.owner_dsn)") from exc
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        sweep = grant_sweep_sql()
        for version, name, sql in migration_files():
            if version in done or (upto is not None and version > upto):
                continue
            try:
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute(sweep)
                    conn.execute("INSERT INTO schema_migrations (version, name) "
                                 "VALUES (%s, %s)", (version, name))
            except psycopg.errors.InsufficientPrivilege as exc:
                raise MigrationsPending(
                    f"migration {name} refused to role {conn.info.user!r}: run "
                    "`sohoa db migrate` as the owner (postgres.owner_dsn)") from exc
            log.info("migration applied", extra={"migration": name})
            applied_now.append(name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied_now
