"""Page identity in the progress store: fonds → file → document → page, with exact counts
before and after each change (multi-page documents, the same file code in two fonds, two
documents claiming one number, a rescanned document, a deleted one, version-1 checks)."""

from __future__ import annotations

import json
from datetime import timedelta

import psycopg
import pytest

from consumers.apply import BatchApplier, Record
from consumers.synth import sha
from sohoa.events import (
    FileAssembled,
    FileVerdict,
    PageRef,
    PageRemoved,
    PageScanned,
)
from tests.support.progress_store import (
    apply_events,
    assert_same_tables,
    dump,
    fresh_db,
    records,
    scalar,
)
from tests.support.store_events import T0, checked, document

pytestmark = pytest.mark.integration


def file_row(conn, code: str = "HS-01", fonds: str = "UBND") -> tuple:
    return conn.execute("SELECT pages, documents, checked_pages, qc_failed_pages, state "
                        "FROM files WHERE fonds = %s AND file_code = %s",
                        (fonds, code)).fetchone()


def site_row(conn) -> tuple:
    return conn.execute("SELECT pages_scanned, documents_scanned, checked_pages "
                        "FROM v_site_progress WHERE site_id = 'xa-a'").fetchone()


def day_pages(conn) -> int:
    return conn.execute("SELECT COALESCE(sum(pages_scanned), 0) FROM daily_progress"
                        ).fetchone()[0]


def test_a_multi_page_pdf_and_tiff_count_every_page(pg) -> None:
    _dsn, conn = pg
    pages = (document("001.jpg", 1) + document("QD-15-UBND.pdf", 50, minutes=1)
             + document("CV-02.tif", 20, minutes=2) + document("002.png", 1, minutes=3))
    apply_events(conn, pages, batch=37)
    assert file_row(conn) == (72, 4, 0, 0, "scanning")
    apply_events(conn, [checked(p, passed=p.page_index != 7) for p in pages], batch=37)
    assert file_row(conn) == (72, 4, 72, 2, "scanning")  # page 7 of the PDF and of the TIFF
    assert site_row(conn) == (72, 4, 72)
    assert day_pages(conn) == 72
    assert conn.execute("SELECT files, pages, documents FROM v_files_by_state").fetchone() == (
        1, 72, 4)
    assert conn.execute("SELECT count(*), count(DISTINCT document) FROM pages WHERE "
                        "document = 'QD-15-UBND.pdf' AND number IS NULL").fetchone() == (50, 1)


def test_the_same_file_code_in_two_fonds_is_two_files(pg) -> None:
    """Before: FONDS-B's pages overwrote FONDS-A's, its fonds switched and the accepted file
    turned back to scanning."""
    _dsn, conn = pg
    a = [p for n in (1, 2, 3) for p in document(f"{n:03d}.tif", 1, fonds="FONDS-A", minutes=n)]
    apply_events(conn, a)
    apply_events(conn, [FileAssembled(site_id="xa-a", fonds="FONDS-A", file_code="HS-01",
                                      pages=[_ref(p) for p in a],
                                      occurred_at=T0 + timedelta(hours=1)),
                        *(checked(p, minutes=70) for p in a),
                        FileVerdict(site_id="xa-a", fonds="FONDS-A", file_code="HS-01",
                                    verdict="accepted", pages_total=3, pages_accepted=3,
                                    occurred_at=T0 + timedelta(hours=2))])
    assert file_row(conn, fonds="FONDS-A") == (3, 3, 3, 0, "accepted")
    b = [p for n in (1, 2) for p in document(f"{n:03d}.tif", 1, fonds="FONDS-B",
                                                content="B", minutes=200 + n)]
    apply_events(conn, b)
    assert file_row(conn, fonds="FONDS-A") == (3, 3, 3, 0, "accepted")
    assert file_row(conn, fonds="FONDS-B") == (2, 2, 0, 0, "scanning")
    assert conn.execute("SELECT fonds, count(*) FROM pages GROUP BY 1 ORDER BY 1").fetchall() \
        == [("FONDS-A", 3), ("FONDS-B", 2)]
    assert conn.execute("SELECT pages_scanned, files_total, files_accepted, pages_accepted "
                        "FROM v_site_progress").fetchone() == (5, 2, 1, 3)


def _ref(p: PageScanned) -> PageRef:
    return PageRef(document=p.document, page_index=p.page_index, number=p.number, uri=p.uri,
                   document_sha256=p.document_sha256, sha256=p.sha256, revision=p.revision)


def test_two_documents_claiming_one_number_are_two_pages_with_their_revisions(pg) -> None:
    """Before: one row per claimed number, so PostgreSQL kept one of the two."""
    _dsn, conn = pg
    tif, jpg = document("003.tif", 1)[0], document("003.jpg", 1, content="other", minutes=1)[0]
    assert tif.number == jpg.number == 3
    apply_events(conn, [tif, jpg])
    assert file_row(conn)[:2] == (2, 2)
    assert conn.execute("SELECT document, number, sha256 FROM page_revisions ORDER BY 1"
                        ).fetchall() == [("003.jpg", 3, jpg.sha256), ("003.tif", 3, tif.sha256)]
    assert day_pages(conn) == 2


@pytest.mark.parametrize("copy_first", [True, False], ids=["copy", "dedup"])
def test_a_rescanned_document_with_one_page_more_and_one_changed(stack, copy_first) -> None:
    """The agent re-sends the rescanned document's pages: those unchanged keep their revision
    (new document digest), page 5 is revision 2, page 41 is new. Exactly one new page and one
    new revision, on either path."""
    first = document("QD-40.pdf", 40)
    rescan = document("QD-40.pdf", 41, rev=2, changed=frozenset({5}), content="v2",
                      minutes=60)
    assert {p.sha256 for p in rescan} - {p.sha256 for p in first} == {
        rescan[4].sha256, rescan[40].sha256}
    with psycopg.connect(fresh_db(stack)) as conn:
        applier = BatchApplier(conn, "g", copy_first=copy_first)
        with conn.transaction():
            applier.apply(records(first))
        before = scalar(conn, "SELECT count(*) FROM page_revisions")
        with conn.transaction():
            res = applier.apply(records(rescan, start=40))
        assert res.applied["PageScanned"] == 41
        assert scalar(conn, "SELECT count(*) FROM page_revisions") == before + 2
        assert conn.execute("SELECT page_index FROM page_revisions WHERE revision = 2"
                            ).fetchall() == [(5,)]
        assert file_row(conn)[:2] == (41, 1)
        assert day_pages(conn) == 41
        # Every page now names the new document bytes.
        assert conn.execute("SELECT DISTINCT document_sha256 FROM pages").fetchall() == [
            (rescan[0].document_sha256,)]
        tables = dump(conn)
    # The same end whether the rescan came in by COPY or by the careful path.
    with psycopg.connect(fresh_db(stack)) as conn:
        apply_events(conn, first + rescan, batch=13)
        assert_same_tables(tables, dump(conn))


def test_a_deleted_document_removes_its_pages(pg) -> None:
    _dsn, conn = pg
    keep, gone = document("001.tif", 1), document("PL-03.pdf", 10, minutes=1)
    apply_events(conn, keep + gone + [checked(p) for p in keep + gone])
    assert file_row(conn)[:3] == (11, 2, 11)
    removals = [PageRemoved(site_id="xa-a", fonds="UBND", file_code="HS-01",
                            document=p.document, page_index=p.page_index, sha256=p.sha256,
                            path=p.path, occurred_at=T0 + timedelta(days=1))
                for p in gone]
    apply_events(conn, removals)
    assert file_row(conn)[:3] == (1, 1, 1)
    assert site_row(conn) == (1, 1, 1)
    assert day_pages(conn) == 1
    assert conn.execute("SELECT count(*) FROM pages WHERE removed").fetchone() == (10,)


def test_a_page_carries_the_size_of_its_latest_check(pg) -> None:
    _dsn, conn = pg
    (p,) = document("001.tif", 1)
    apply_events(conn, [checked(p, minutes=5, size=(297.0, 420.0)), p])
    assert conn.execute("SELECT width_mm, height_mm FROM pages").fetchone() == (297.0, 420.0)
    apply_events(conn, [checked(p, minutes=9, size=None)])  # a later check states no size
    assert conn.execute("SELECT width_mm, height_mm, check_passed FROM pages").fetchone() == (
        None, None, True)


def _v1(name: str, **fields) -> bytes:
    return json.dumps({"schema": {"name": name, "version": 1}, "site_id": "xa-a",
                       "fonds": "UBND", "file_code": "HS-01", **fields}).encode()


V1_SCAN = _v1("PageScanned", event_id="v1-scan-0003", occurred_at="2026-03-03T02:00:00Z",
              page_no=3, uri="file:///hot/UBND/HS-01/003.tif", sha256=sha("p3"),
              size_bytes=10, media_type="image/tiff", path="UBND/HS-01/003.tif")
V1_CHECK = _v1("PageChecked", event_id="v1-check-0003", occurred_at="2026-03-03T02:05:00Z",
               page_no=3, sha256=sha("p3"), passed=False,
               checks=[{"check": "dpi", "value": 150, "threshold": 200, "passed": False}])


@pytest.mark.parametrize("order", ["scan, check", "check, scan", "one batch"])
@pytest.mark.parametrize("copy_first", [True, False], ids=["copy", "dedup"])
def test_a_version_1_check_finds_its_page_by_number(stack, order: str, copy_first) -> None:
    """A version-1 check names its page by number only: it lands on the file's page claiming
    that number, whether the page came before it, after it (it waits) or with it."""
    batches = {"scan, check": [[V1_SCAN], [V1_CHECK]], "check, scan": [[V1_CHECK], [V1_SCAN]],
               "one batch": [[V1_CHECK, V1_SCAN]]}[order]
    with psycopg.connect(fresh_db(stack)) as conn:
        applier = BatchApplier(conn, "g", copy_first=copy_first)
        offset = 0
        for batch in batches:
            with conn.transaction():
                res = applier.apply([Record("t", 0, offset + i, v) for i, v in enumerate(batch)])
            assert not res.dead_letters
            offset += len(batch)
        assert conn.execute("SELECT document, page_index, event_id FROM page_checks"
                            ).fetchall() == [("003.tif", 1, "v1-check-0003")]
        assert conn.execute("SELECT count(*) FROM legacy_page_checks").fetchone() == (0,)
        assert conn.execute("SELECT check_passed FROM pages").fetchone() == (False,)
        assert file_row(conn)[:4] == (1, 1, 1, 1)
        assert conn.execute("SELECT document, number FROM audit_log WHERE action = "
                            "'PageChecked'").fetchone() == (None, 3)


def test_a_version_1_check_waits_for_its_page_and_a_replay_changes_nothing(pg) -> None:
    _dsn, conn = pg
    applier = BatchApplier(conn, "g")
    with conn.transaction():
        applier.apply([Record("t", 0, 0, V1_CHECK)])
    assert conn.execute("SELECT number, sha256 FROM legacy_page_checks").fetchall() == [
        (3, sha("p3"))]
    with conn.transaction():
        res = applier.apply([Record("t", 0, 0, V1_CHECK)])  # a replay: not parked twice
    assert res.duplicates == 1
    with conn.transaction():
        applier.apply([Record("t", 0, 1, V1_SCAN)])
    assert conn.execute("SELECT count(*) FROM legacy_page_checks").fetchone() == (0,)
    assert conn.execute("SELECT check_passed FROM pages").fetchone() == (False,)


@pytest.mark.parametrize("together", [False, True], ids=["apart", "one batch"])
@pytest.mark.parametrize("copy_first", [True, False], ids=["copy", "dedup"])
def test_a_version_1_removal_named_by_number_finds_its_page(stack, together,
                                                             copy_first) -> None:
    scan = _v1("PageScanned", event_id="v1-scan-uri", occurred_at="2026-03-03T02:00:00Z",
               page_no=3, uri="s3://kho/Trang%2003.tif", sha256=sha("p3"), size_bytes=10,
               media_type="image/tiff")
    removal = _v1("PageRemoved", event_id="v1-removed", occurred_at="2026-03-03T03:00:00Z",
                  page_no=3, sha256=sha("p3"))
    batches = [[scan, removal]] if together else [[scan], [removal]]
    with psycopg.connect(fresh_db(stack)) as conn:
        applier = BatchApplier(conn, "g", copy_first=copy_first)
        offset = 0
        for batch in batches:
            with conn.transaction():
                applier.apply([Record("t", 0, offset + i, v) for i, v in enumerate(batch)])
            offset += len(batch)
        assert conn.execute("SELECT document, removed FROM pages").fetchall() == [
            ("Trang 03.tif", True)]
        assert conn.execute("SELECT document FROM page_removals").fetchall() == [
            ("Trang 03.tif",)]
        assert file_row(conn)[:2] == (0, 0)
        assert day_pages(conn) == 0


def test_a_version_1_event_whose_upgrade_fails_is_a_dead_letter_and_the_rest_counts(
        pg) -> None:
    """A version-1 page named by a URI that urllib cannot split (a bracket in its host) made
    the contract's upgrade raise ValueError, not InvalidEvent: the batch's parse failed, and
    the consumer with it, on every restart."""
    _dsn, conn = pg
    bad = _v1("PageScanned", event_id="v1-bad-uri", occurred_at="2026-03-03T02:00:00Z",
              page_no=1, uri="file://[scan/001.tif", sha256=sha("bad"), size_bytes=1,
              media_type="image/tiff")
    with conn.transaction():
        res = BatchApplier(conn, "g").apply([Record("t", 0, 0, bad), Record("t", 0, 1, V1_SCAN)])
    assert res.applied["PageScanned"] == 1
    assert [d.offset for d in res.dead_letters] == [0]
    assert "IPv6" in res.dead_letters[0].reason
    assert conn.execute("SELECT next_offset FROM consumer_offsets").fetchone() == (2,)
