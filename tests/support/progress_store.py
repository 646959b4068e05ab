"""Helpers shared by the progress-store tests: fresh databases, applying events, comparable
dumps. Its fixture (``pg``) is in conftest.py."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from consumers.apply import BatchApplier, Record
from consumers.db import migrate
from sohoa.events import Event

# Columns that record when or through which offset a row was written, not what it says.
VOLATILE = {"applied_at", "created_at", "updated_at", "stored_at", "imported_at", "topic",
            "part", "offset"}
# The tables whose contents must not depend on the order or repetition of events.
DOMAIN_TABLES = ("sites", "files", "pages", "page_revisions", "page_removals", "page_checks",
                 "legacy_page_checks", "file_assemblies", "ocr_results", "verdicts",
                 "site_heartbeats", "daily_progress", "dead_letters")


def fresh_db(stack, prefix: str = "cons") -> str:
    """A fresh database migrated by its owner; the DSN of the writer role, which the consumer
    runs as (so every test through here proves the writer's grants are enough)."""
    dsn = stack.new_database(prefix)
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    return as_role(dsn, "sohoa_writer")


def as_role(dsn: str, role: str) -> str:
    """``dsn`` as another of the stack's roles (same database, same password file)."""
    return psycopg.conninfo.make_conninfo(dsn, user=role)


def records(events: Iterable[Event], topic: str = "t", partition: int = 0,
            start: int = 0) -> list[Record]:
    return [Record(topic, partition, start + i, e.to_json(), e.key().encode())
            for i, e in enumerate(events)]


def apply_all(conn: psycopg.Connection, recs: Sequence[Record], batch: int = 500,
              group: str = "g") -> BatchApplier:
    """Apply ``recs`` in batches, each in its own transaction as the consumer does (a read the
    test made before has its implicit transaction ended first)."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
        conn.commit()
    applier = BatchApplier(conn, group)
    for i in range(0, len(recs), batch):
        with conn.transaction():
            applier.apply(list(recs[i:i + batch]))
    return applier


def apply_events(conn: psycopg.Connection, events: Sequence[Event], batch: int = 500) -> None:
    apply_all(conn, records(events), batch)


def dump(conn_or_dsn: psycopg.Connection | str,
         tables: Sequence[str] = DOMAIN_TABLES) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the domain tables (volatile columns left out), sorted: comparable dumps."""
    conn = psycopg.connect(conn_or_dsn) if isinstance(conn_or_dsn, str) else conn_or_dsn
    own = conn is not conn_or_dsn
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for t in tables:
            cols = [r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s AND table_schema = 'public' ORDER BY ordinal_position",
                (t,)).fetchall() if r[0] not in VOLATILE]
            if t == "dead_letters":
                cols = [c for c in cols if c != "occurred_at"]  # the consumer's own: now()
            quoted = ", ".join(f'"{c}"::text' for c in cols)
            rows = conn.execute(f"SELECT {quoted} FROM {t}").fetchall()
            out[t] = sorted(rows, key=lambda r: tuple("" if v is None else v for v in r))
        applied = conn.execute(
            "SELECT event_id, action FROM audit_log WHERE action NOT IN "
            "('site_auto_created', 'file_not_opened') ORDER BY 1, 2").fetchall()
        out["audit_log(applied)"] = applied
        return out
    finally:
        if own:
            conn.close()


def assert_daily_is_a_recount(conn_or_dsn: psycopg.Connection | str) -> None:
    """``daily_progress.pages_scanned`` (kept by difference, batch by batch) equals a recount
    of the pages on each site's day, and no row is left for a day with nothing on it."""
    conn = psycopg.connect(conn_or_dsn) if isinstance(conn_or_dsn, str) else conn_or_dsn
    try:
        kept = {(s, d): n for s, d, n in conn.execute(
            "SELECT site_id, day, pages_scanned FROM daily_progress WHERE pages_scanned <> 0")}
        recount = {(s, d): n for s, d, n in conn.execute(
            "SELECT site_id, scan_day, count(*) FROM pages WHERE NOT removed GROUP BY 1, 2")}
        assert kept == recount
        assert not conn.execute(
            "SELECT 1 FROM daily_progress WHERE pages_scanned = 0 AND pages_accepted = 0 "
            "AND files_accepted = 0").fetchall()
    finally:
        if conn is not conn_or_dsn:
            conn.close()


def assert_same_tables(a: dict[str, list], b: dict[str, list]) -> None:
    assert a.keys() == b.keys()
    for t in a:
        assert len(a[t]) == len(b[t]), f"{t}: {len(a[t])} rows vs {len(b[t])}"
        diff = [(x, y) for x, y in zip(a[t], b[t], strict=True) if x != y]
        assert not diff, f"{t} differs, first: {diff[0]}"


def shuffle_within_keys(events: Sequence[Event], seed: int) -> list[Event]:
    """Interleave keys at random while every key keeps its own order (Kafka's guarantee)."""
    rnd = random.Random(seed)
    queues: dict[str, list[Event]] = {}
    for e in events:
        queues.setdefault(e.key(), []).append(e)
    keys = [k for k, q in queues.items() for _ in q]
    rnd.shuffle(keys)
    pos = dict.fromkeys(queues, 0)
    out = []
    for k in keys:
        out.append(queues[k][pos[k]])
        pos[k] += 1
    return out


def scalar(conn: psycopg.Connection[Any], query: str, params: Sequence[Any] | None = None
           ) -> Any:
    """The first column of the one row ``query`` returns; no row at all fails the test."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, f"no row: {query}"
    return row[0]
