"""Migration 005 on a database holding what the applier stored before page identity v2.

`fixtures/pre005/` (beside this file) holds version-1 events and the rows the applier of 448536e
(the last commit before v2) stored for them, after part A of the stream and after all of it
(`make_fixture.py` made them). The migrated rows must be what the new applier makes of the
same version-1 events, and version-1 events arriving after the migration must land on them.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from consumers.apply import BatchApplier, Record
from consumers.db import migrate
from sohoa.events import PageScanned, _document_of, parse_event
from tests.support.progress_store import assert_same_tables, dump, fresh_db, scalar

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parent / "fixtures" / "pre005"


def _records(part: str | None = None) -> list[Record]:
    out = []
    for line in (FIXTURE / "events.jsonl").read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        if part is None or r["part"] == part:
            out.append(Record("t", 0, r["offset"], r["value"].encode()))
    return out


def _apply(dsn: str, recs: list[Record], batch: int = 40) -> tuple[int, int]:
    """Apply ``recs`` with the applier of this code; (applied, duplicates)."""
    applied = duplicates = 0
    with psycopg.connect(dsn) as conn:
        applier = BatchApplier(conn, "g")
        for i in range(0, len(recs), batch):
            with conn.transaction():
                res = applier.apply(recs[i:i + batch])
            assert not res.dead_letters, res.dead_letters[0].reason
            applied += sum(res.applied.values())
            duplicates += res.duplicates
    return applied, duplicates


def _pre005(stack, rows: str) -> str:
    """A database at migration 004 holding the fixture's ``rows`` (pg_dump's data-only SQL)."""
    dsn = stack.new_database("pre005")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert migrate(conn, upto=4)[-1].startswith("004_")
    sql = "\n".join(line for line in (FIXTURE / rows).read_text(encoding="utf-8").splitlines()
                    if not line.startswith("\\"))  # psql's own commands (\restrict)
    with psycopg.connect(dsn) as conn:  # its own session: the dump empties search_path
        conn.execute(sql)
    return dsn


def _counts(dsn: str) -> dict[str, list[tuple]]:
    with psycopg.connect(dsn) as conn:
        return {
            "sites": conn.execute(
                "SELECT site_id, pages_scanned, pages_accepted, files_total, files_accepted,"
                " qc_failed_pages FROM v_site_progress ORDER BY 1").fetchall(),
            "days": conn.execute("SELECT * FROM daily_progress ORDER BY 1, 2").fetchall(),
            "files": conn.execute(
                "SELECT site_id, file_code, state, pages, checked_pages, qc_failed_pages,"
                " pages_accepted FROM files ORDER BY 1, 2").fetchall(),
        }


def test_the_fixture_holds_the_cases_the_rule_must_read(stack) -> None:
    dsn = _pre005(stack, "rows_a.sql")
    with psycopg.connect(dsn) as conn:
        # A check stored before its page (page 4 of the hand-made file arrives in part B), a
        # page named by its URI alone, and a removal.
        assert conn.execute("SELECT count(*) FROM page_checks k WHERE NOT EXISTS (SELECT 1 "
                            "FROM pages p WHERE p.site_id = k.site_id AND p.file_code = "
                            "k.file_code AND p.page_no = k.page_no)").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pages WHERE path = ''").fetchone() == (2,)
    assert any(r.value is not None and '"PageRemoved"' in r.value.decode()
               for r in _records("B"))


def test_migrating_stored_rows_equals_applying_their_events_with_the_new_code(stack) -> None:
    """The rows of the whole version-1 history, migrated, are the rows this code makes of the
    same events; and a stream migrated half-way ends in the same rows once the rest arrives."""
    whole = _pre005(stack, "rows_all.sql")
    before = _counts(whole)
    with psycopg.connect(whole, autocommit=True) as conn:
        assert migrate(conn)[0] == "005_page_identity.sql"
        assert migrate(conn) == []  # idempotent as every migration: applied once
    migrated = dump(whole)
    assert migrated["pages"] and migrated["page_checks"] and migrated["page_removals"]
    # Nothing counted is lost or recounted.
    assert _counts(whole) == before

    # The same events applied by this code to an empty database (version 2 from the start).
    fresh = fresh_db(stack, "v1new")
    assert _apply(fresh, _records()) == (len(_records()), 0)
    assert_same_tables(dump(fresh), migrated)

    # Half the stream stored before the migration, the rest after it: the same rows again.
    half = _pre005(stack, "rows_a.sql")
    with psycopg.connect(half, autocommit=True) as conn:
        migrate(conn)
        # The check stored before its page waits for it.
        assert conn.execute("SELECT number FROM legacy_page_checks").fetchall() == [(4,)]
    rest = _records("B")
    assert _apply(half, rest) == (len(rest), 0)
    assert_same_tables(dump(half), migrated)
    with psycopg.connect(half) as conn:
        assert conn.execute("SELECT count(*) FROM legacy_page_checks").fetchone() == (0,)


def test_version_1_events_replayed_after_the_migration_change_nothing(stack) -> None:
    dsn = _pre005(stack, "rows_all.sql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    before, counts = dump(dsn), _counts(dsn)
    recs = _records()
    assert _apply(dsn, recs, batch=57) == (0, len(recs))
    assert dump(dsn) == before
    assert _counts(dsn) == counts


def test_version_1_pages_land_on_the_documents_their_events_name(stack) -> None:
    """Each migrated page is named as the contract's upgrade of its events names it."""
    dsn = _pre005(stack, "rows_all.sql")
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        stored = {(s, f, n): d for s, f, n, d in conn.execute(
            "SELECT site_id, file_code, number, document FROM pages WHERE page_index = 1")}
    expected = {}
    for r in _records():
        assert r.value is not None
        ev = parse_event(r.value)
        if isinstance(ev, PageScanned):
            expected[(ev.site_id, ev.file_code, ev.number)] = ev.document
    assert stored == expected
    assert stored[("xa-hand", "Hồ sơ 7", 2)] == "Quyết định 02.tif"  # NFD, percent-encoded
    assert stored[("xa-hand", "Hồ sơ 7", 3)] == "Trang 03.tif"  # from an s3:// URI


_NAMES = [
    ("UBND/HS-1/003.tif", "", 3), ("", "file:///hot/HS-1/003.tif", 3),
    ("", "file:///hot/H%E1%BB%93%20s%C6%A1/Trang%2007.TIF?x=1#frag", 7),
    ("", "file:///hot/a/Quye%CC%82%CC%81t.tif", 1), ("Quye\u0302\u0301t/x.tif", "", 1),
    ("a/b/", "", 2), ("a/./b/.", "", 2), ("/", "file:///x/y.tif", 4), ("", "", 9),
    ("", "s3://kho/Trang%2003.tif", 3), ("", "file:///", 5), ("", "x.tif", 6),
    ("", " \tfile:///z/w.tif", 6), ("", "http://h:80/p/q.tif;params?x", 1),
    ("", "file:///a/%2Fb.tif", 2), ("", "file:///a/%zz.tif", 2), ("", "//host/c.tif", 2),
    ("..", "", 1), ("", "file:///a/b%C3.tif", 3), ("", "mailto:x@y", 8),
    ("", "C:/scan/HS/010.tif", 10), ("", "file:///hot/a.tif#", 1), ("", "a?b/c.tif", 1),
]


@pytest.fixture(scope="module")
def rule_db(stack) -> str:
    return fresh_db(stack, "rule")


@pytest.mark.parametrize(("path", "uri", "page_no"), _NAMES)
def test_the_sql_upgrade_rule_is_the_contracts(rule_db: str, path: str, uri: str,
                                               page_no: int) -> None:
    with psycopg.connect(rule_db) as conn:
        got = scalar(conn, "SELECT sohoa_v1_document(%s, %s, %s)", (path, uri, page_no))
    if uri == "file:///a/b%C3.tif":  # invalid UTF-8: Python puts U+FFFD, SQL keeps the text
        assert got == "b%C3.tif"
        return
    assert got == _document_of(path, uri, page_no)

