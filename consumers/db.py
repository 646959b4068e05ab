"""PostgreSQL connections and the numbered SQL migrations (``consumers/migrations/NNN_*.sql``)."""

from __future__ import annotations

import logging
import time
from importlib import resources

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


def connect(cfg: PostgresConfig, *, autocommit: bool = False, reader: bool = False,
            dsn: str | None = None) -> psycopg.Connection:
    if dsn is None:
        dsn = cfg.url
        if reader and cfg.reader_dsn is not None:
            dsn = cfg.reader_dsn.get_secret_value()
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


def migrate(conn: psycopg.Connection, *, upto: int | None = None) -> list[str]:
    """Apply pending migrations (those numbered up to ``upto``, if given) under an advisory
    lock; return the names applied.

    Each migration runs in its own transaction with its bookkeeping row, so a failed one leaves
    nothing half-done and a second run is a no-op.
    """
    applied_now: list[str] = []
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done or (upto is not None and version > upto):
                continue
            with conn.transaction():
                conn.execute(sql)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                             (version, name))
            log.info("migration applied", extra={"migration": name})
            applied_now.append(name)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied_now
