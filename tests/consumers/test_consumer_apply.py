"""The batch applier against a real PostgreSQL: exactly-once effect, order independence,
derived state and bad input."""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from zoneinfo import ZoneInfo

import psycopg
import pytest

from consumers.apply import BatchApplier, Record, reason_class
from consumers.campaign import PlanRow, import_plan
from consumers.synth import SynthConfig, generate
from sohoa.events import (
    CheckResult,
    DeadLetter,
    Event,
    FileAssembled,
    FileManifest,
    FileVerdict,
    OcrCompleted,
    OcrFailed,
    OcrProgress,
    PageChecked,
    PageRef,
    PageRemoved,
    PageScanned,
    PageText,
    SiteHeartbeat,
    parse_event,
)
from tests.support.progress_store import (
    apply_all,
    apply_events,
    assert_daily_is_a_recount,
    assert_same_tables,
    dump,
    fresh_db,
    records,
    scalar,
    shuffle_within_keys,
)
from tests.support.store_events import T0, page

pytestmark = pytest.mark.integration


def one(conn, sql, *args):
    return conn.execute(sql, args).fetchone()


def test_replaying_a_batch_changes_nothing(pg) -> None:
    _dsn, conn = pg
    events = generate(SynthConfig(sites=2, files_per_site=3, pages_per_file=5))
    recs = records(events)
    applier = apply_all(conn, recs, batch=100)
    before = dump(conn)
    with conn.transaction():
        res = applier.apply(recs)
    assert sum(res.applied.values()) == 0
    assert res.duplicates == len(recs)
    assert dump(conn) == before


def test_duplicated_and_shuffled_streams_end_in_the_same_tables(stack) -> None:
    events = generate(SynthConfig(sites=3, files_per_site=5, pages_per_file=8, seed=11))
    orderly = fresh_db(stack)
    with psycopg.connect(orderly) as conn:
        apply_events(conn, events, batch=50)
    expected = dump(orderly)
    assert expected["pages"], "the synthetic history must produce pages"

    # Every event twice, shuffled within keys, in odd batch sizes.
    within = fresh_db(stack)
    twice = shuffle_within_keys(list(events) + list(events), seed=3)
    with psycopg.connect(within) as conn:
        apply_events(conn, twice, batch=37)
    assert_same_tables(expected, dump(within))
    assert_daily_is_a_recount(within)

    # Harsher than Kafka ever is: a full shuffle, across keys and within them.
    chaos = fresh_db(stack)
    shuffled = list(events) * 2
    random.Random(5).shuffle(shuffled)
    with psycopg.connect(chaos) as conn:
        apply_events(conn, shuffled, batch=64)
    assert_same_tables(expected, dump(chaos))
    assert_daily_is_a_recount(chaos)


def test_daily_counts_kept_by_difference_equal_a_recount(stack) -> None:
    """The day's page count is kept by what each batch changes (a recount of the day made the
    consumer fall behind at 3,000 pages/s): removals, rescans that bring a page back or date
    it earlier, replays, and batches of one event or of a whole day must all leave the count
    of a recount."""
    events = generate(SynthConfig(sites=3, files_per_site=6, pages_per_file=8, seed=17,
                                  rescan_share=0.4, removed_share=0.2))
    assert any(isinstance(e, PageRemoved) for e in events)
    rnd = random.Random(8)
    stream = list(events) + rnd.sample(list(events), len(events) // 3)
    rnd.shuffle(stream)
    dsn = fresh_db(stack)
    with psycopg.connect(dsn) as conn:
        at = 0
        while at < len(stream):
            n = rnd.choice((1, 2, 7, 50, 400))
            apply_events(conn, stream[at:at + n], batch=n)
            at += n
            if rnd.random() < 0.2:
                assert_daily_is_a_recount(conn)
        assert_daily_is_a_recount(conn)
        assert scalar(conn, "SELECT count(*) FROM pages WHERE removed") > 0


def test_counts_match_an_independent_tally_of_the_events(pg) -> None:
    _dsn, conn = pg
    events = generate(SynthConfig(sites=2, files_per_site=6, pages_per_file=10, seed=2,
                                  removed_share=0.1))
    apply_events(conn, events, batch=200)
    tz = ZoneInfo("Asia/Ho_Chi_Minh")
    current: dict[tuple, tuple[int, str, datetime]] = {}
    first: dict[tuple, datetime] = {}
    removed: set[tuple] = set()
    for e in events:
        if isinstance(e, PageScanned):
            k = (e.site_id, e.fonds, e.file_code, e.document, e.page_index)
            first[k] = min(first.get(k, e.occurred_at), e.occurred_at)
            if k not in current or e.revision > current[k][0]:
                current[k] = (e.revision, e.sha256, e.occurred_at)
                removed.discard(k)
        elif isinstance(e, PageRemoved):
            k = (e.site_id, e.fonds, e.file_code, e.document, e.page_index)
            if k in current and current[k][1] == e.sha256:
                removed.add(k)
    live = set(current) - removed
    assert removed, "the history should remove a few pages"
    assert any(k[4] > 1 for k in live), "the history should hold multi-page documents"
    per_site: defaultdict[str, int] = defaultdict(int)
    per_day: defaultdict[tuple[str, date], int] = defaultdict(int)
    per_file: dict[tuple, tuple[int, set]] = {}
    for k in live:
        per_site[k[0]] += 1
        per_day[(k[0], first[k].astimezone(tz).date())] += 1
        n, docs = per_file.get(k[:3], (0, set()))
        per_file[k[:3]] = (n + 1, docs | {k[3]})
    got_site = dict(conn.execute("SELECT site_id, pages_scanned FROM v_site_progress"))
    assert got_site == dict(per_site)
    got_files = {(s, f, c): (n, d) for s, f, c, n, d in conn.execute(
        "SELECT site_id, fonds, file_code, pages, documents FROM files WHERE pages > 0")}
    assert got_files == {k: (n, len(docs)) for k, (n, docs) in per_file.items()}
    got_day = {(s, d): n for s, d, n in conn.execute(
        "SELECT site_id, day, pages_scanned FROM daily_progress WHERE pages_scanned > 0")}
    assert got_day == dict(per_day)
    # Accepted pages: the pages_accepted of each file's latest verdict, when it is 'accepted'.
    latest: dict[tuple, FileVerdict] = {}
    for e in events:
        if isinstance(e, FileVerdict):
            fk = (e.site_id, e.fonds, e.file_code)
            if fk not in latest or e.revision > latest[fk].revision:
                latest[fk] = e
    acc: defaultdict[str, int] = defaultdict(int)
    for (s, _fonds, _f), v in latest.items():
        if v.verdict == "accepted":
            acc[s] += v.pages_accepted
    got_acc = dict(conn.execute("SELECT site_id, pages_accepted FROM v_site_progress"))
    assert got_acc == dict(acc)


def test_file_state_follows_revisions_not_arrival_order(pg) -> None:
    _dsn, conn = pg
    p1 = page(no=1)
    ref = ref_of(p1)
    asm1 = FileAssembled(site_id="xa-a", file_code="F1", revision=1, pages=[ref],
                         occurred_at=T0 + timedelta(minutes=1))
    ocr1 = OcrCompleted(site_id="xa-a", file_code="F1", revision=1, output_uri="file:///o.pdf",
                        output_sha256="b" * 64, pages=[PageText(document=p1.document, chars=10)],
                        occurred_at=T0 + timedelta(minutes=2))
    ver1 = FileVerdict(site_id="xa-a", file_code="F1", revision=1, verdict="accepted",
                       pages_total=1, pages_accepted=1, occurred_at=T0 + timedelta(minutes=3))
    applier = BatchApplier(conn, "g")
    # The verdict first, then OCR, then the assembly it judged, then the page: still accepted.
    for ev in (ver1, ocr1, asm1, p1):
        with conn.transaction():
            applier.apply(records([ev]))
    assert one(conn, "SELECT state, pages FROM files") == ("accepted", 1)
    # Events about a file before any page of it are kept, and the audit log says so.
    notes = conn.execute("SELECT action FROM audit_log WHERE action = 'file_not_opened'")
    assert len(notes.fetchall()) == 3
    # A newer assembly (a late page) reopens the file until its own verdict.
    asm2 = FileAssembled(site_id="xa-a", file_code="F1", revision=2, trigger="late_page",
                         pages=[ref], occurred_at=T0 + timedelta(minutes=10))
    with conn.transaction():
        applier.apply(records([asm2], start=10))
    assert one(conn, "SELECT state FROM files")[0] == "assembled"
    with conn.transaction():
        applier.apply(records([ver1], start=20))  # a replay of the old verdict changes nothing
    assert one(conn, "SELECT state FROM files")[0] == "assembled"


def test_ocr_progress_is_kept_for_the_current_assembly_only(pg) -> None:
    """OcrProgress is no dead letter: the file keeps the latest pages done of pages of the
    revision it is assembled at; an older progress, or one of another revision, is not."""
    _dsn, conn = pg
    p1 = page(no=1)

    def asm(rev: int, minutes: int) -> FileAssembled:
        return FileAssembled(site_id="xa-a", file_code="F1", revision=rev, pages=[ref_of(p1)],
                             occurred_at=T0 + timedelta(minutes=minutes))

    def progress(rev: int, done: int, total: int, minutes: float) -> OcrProgress:
        return OcrProgress(site_id="xa-a", file_code="F1", revision=rev, pages_done=done,
                           pages_total=total, occurred_at=T0 + timedelta(minutes=minutes))

    def stored() -> tuple:
        row = one(conn, "SELECT ocr_pages_done, ocr_pages_total, ocr_progress_revision "
                        "FROM files")
        conn.commit()  # each batch its own transaction, as the consumer runs them
        return row

    applier = BatchApplier(conn, "g")
    seq = iter(range(0, 10_000, 10))

    def apply(*events) -> None:
        with conn.transaction():
            applier.apply(records(events, start=next(seq)))

    apply(p1, progress(1, 1, 5, 1))  # before its assembly: nothing to show it against
    assert stored() == (None, None, None)
    apply(asm(1, 2), progress(1, 2, 5, 3), progress(1, 3, 5, 4))  # one batch: the latest
    assert stored() == (3, 5, 1)
    apply(progress(1, 2, 5, 3.5))  # late, older: no step back
    assert stored() == (3, 5, 1)
    apply(progress(1, 4, 5, 5))
    assert stored() == (4, 5, 1)
    apply(asm(2, 10), progress(1, 5, 5, 11))  # a newer assembly: revision 1's is stale
    assert stored() == (4, 5, 1)
    apply(progress(2, 1, 3, 12))
    assert stored() == (1, 3, 2)
    apply(progress(2, 0, 3, 13))  # a retried attempt starts again
    assert stored() == (0, 3, 2)
    assert one(conn, "SELECT count(*) FROM dead_letters") == (0,)
    assert one(conn, "SELECT count(*) FROM audit_log WHERE action = 'OcrProgress'") == (8,)


def ref_of(p: PageScanned) -> PageRef:
    return PageRef(document=p.document, page_index=p.page_index, number=p.number, uri=p.uri,
                   document_sha256=p.document_sha256, sha256=p.sha256, revision=p.revision)


def check(p: PageScanned, passed: bool, minutes: int, size: tuple[float, float] | None = None
          ) -> PageChecked:
    width, height = size or (None, None)
    return PageChecked(site_id=p.site_id, fonds=p.fonds, file_code=p.file_code,
                       document=p.document, page_index=p.page_index, sha256=p.sha256,
                       revision=p.revision, passed=passed,
                       checks=[CheckResult(check="dpi", value=300 if passed else 150,
                                           threshold=200, passed=passed)],
                       width_mm=width, height_mm=height,
                       occurred_at=T0 + timedelta(minutes=minutes))


@pytest.mark.parametrize("order", ["page, older, newer", "page, newer, older",
                                   "newer, older, page", "one batch", "replayed"])
@pytest.mark.parametrize("copy_first", [True, False], ids=["copy", "dedup"])
def test_every_check_of_a_revision_is_kept_and_the_page_takes_the_latest(
        stack, order: str, copy_first: bool) -> None:
    """A revision checked twice (a re-check after a new assembly) keeps both checks; the page
    carries the later one, whatever came first and whichever path the batch took."""
    p1 = page(no=1)
    older, newer = check(p1, False, 5), check(p1, True, 9)
    by_name = {"page": p1, "older": older, "newer": newer}
    batches: list[list[Event]] = (
        [[p1, newer, older]] if order == "one batch"
        else [[p1], [older], [newer], [p1, older, newer]] if order == "replayed"
        else [[by_name[n]] for n in order.split(", ")])
    with psycopg.connect(fresh_db(stack)) as conn:
        applier = BatchApplier(conn, "g", copy_first=copy_first)
        start = 0
        for batch in batches:
            with conn.transaction():
                applier.apply(records(batch, start=start))
            start += len(batch)
        assert conn.execute("SELECT event_id, passed FROM page_checks ORDER BY checked_at"
                            ).fetchall() == [(older.event_id, False), (newer.event_id, True)]
        assert one(conn, "SELECT check_passed FROM pages") == (True,)
        assert one(conn, "SELECT checked_pages, qc_failed_pages FROM files") == (1, 0)


def test_the_dedup_path_repicks_only_when_it_dropped_a_replay(stack) -> None:
    """Re-ranking the batch's pages is for a batch that lost replayed rows; a batch with none
    (here one with a check, whose rows the dedup path stages too) keeps the parse's picks."""
    p1 = page(no=1)
    with psycopg.connect(fresh_db(stack)) as conn:
        applier = BatchApplier(conn, "g", copy_first=False)
        timings: defaultdict[str, float] = defaultdict(float)
        applier.timings = timings
        with conn.transaction():
            applier.apply(records([p1, check(p1, True, 5)]))
        assert "repick" not in timings
        with conn.transaction():
            applier.apply(records([p1, check(p1, True, 6)], start=2))  # p1 replayed
        assert "repick" in timings
        assert one(conn, "SELECT count(*) FROM page_checks") == (2,)


def test_removed_page_leaves_the_count_and_a_rescan_brings_it_back(pg) -> None:
    _dsn, conn = pg
    p1 = page(no=1)
    p2 = page(no=2, t=T0 + timedelta(seconds=30))
    rm = PageRemoved(site_id="xa-a", file_code="F1", document=p1.document, sha256=p1.sha256,
                     occurred_at=T0 + timedelta(minutes=5))
    apply_events(conn, [p1, p2, rm])
    assert one(conn, "SELECT pages FROM files") == (2 - 1,)
    assert one(conn, "SELECT removed FROM pages WHERE number = 1") == (True,)
    assert one(conn, "SELECT count(*) FROM page_revisions") == (2,)  # history kept
    again = page(no=1, rev=2, t=T0 + timedelta(minutes=9))
    apply_events(conn, [again])
    assert one(conn, "SELECT pages FROM files") == (2,)
    assert one(conn, "SELECT revision, removed FROM pages WHERE number = 1") == (2, False)
    assert one(conn, "SELECT pages_scanned FROM daily_progress") == (2,)


def test_a_removal_in_a_later_batch_takes_the_page_off_its_day(pg) -> None:
    """The batch holds only the removal: the day it changes is found from the stored page."""
    _dsn, conn = pg
    p1, p2 = page(no=1), page(no=2, t=T0 + timedelta(seconds=30))
    apply_events(conn, [p1, p2])
    assert one(conn, "SELECT pages_scanned FROM daily_progress") == (2,)
    apply_events(conn, [PageRemoved(site_id="xa-a", file_code="F1", document=p1.document,
                                    sha256=p1.sha256, occurred_at=T0 + timedelta(days=2))])
    assert one(conn, "SELECT day, pages_scanned FROM daily_progress") == (date(2026, 3, 3), 1)


def test_bad_records_become_dead_letters_and_the_rest_still_count(pg) -> None:
    _dsn, conn = pg
    good = page(no=1)
    missing_sha = good.to_dict()
    del missing_sha["sha256"]
    recs = [
        Record("site", 0, 0, b"\xff not json"),
        Record("site", 0, 1, json.dumps(missing_sha).encode()),
        Record("site", 0, 2, json.dumps({"schema": {"name": "Nope", "version": 1}}).encode()),
        Record("site", 0, 3, None),
        Record("site", 0, 4, good.to_json()),
    ]
    applier = BatchApplier(conn, "g")
    with conn.transaction():
        res = applier.apply(recs)
    assert res.applied["PageScanned"] == 1
    reasons = dict(conn.execute('SELECT "offset", reason FROM dead_letters'))
    assert set(reasons) == {0, 1, 2, 3}
    assert "not JSON" in reasons[0]
    assert "sha256" in reasons[1]
    assert "Nope" in reasons[2]
    assert one(conn, "SELECT site_id FROM dead_letters WHERE \"offset\" = 1") == ("xa-a",)
    assert one(conn, "SELECT next_offset FROM consumer_offsets") == (5,)
    assert one(conn, "SELECT count(*) FROM pages") == (1,)
    # A replay stores nothing twice and reports no new dead letter.
    with conn.transaction():
        again = applier.apply(recs)
    assert again.dead_letters == []
    assert one(conn, "SELECT count(*) FROM dead_letters") == (4,)


def test_reason_classes_are_short_labels() -> None:
    assert reason_class("not JSON: Expecting value") == "invalid_json"
    assert reason_class("field 'schema': missing") == "unknown_schema"
    assert reason_class("PageScanned: field 'sha256': bad") == "invalid_sha256"
    assert reason_class("tesseract timeout after 3") == "tesseract_timeout_after_3"
    assert len(reason_class("x" * 500)) <= 40


def test_a_page_from_an_unplanned_site_is_kept_and_audited(pg) -> None:
    _dsn, conn = pg
    apply_events(conn, [page(site="xa-moi")])
    assert one(conn, "SELECT auto_created, target_pages FROM sites") == (True, None)
    assert one(conn, "SELECT count(*) FROM audit_log WHERE action = 'site_auto_created' "
                     "AND site_id = 'xa-moi'") == (1,)
    assert one(conn, "SELECT pages_scanned FROM v_site_progress") == (1,)


def _audit_rows(conn) -> list[tuple]:
    return conn.execute(
        'SELECT event_id, action, site_id, fonds, file_code, document, page_index, number,'
        ' detail, occurred_at, topic, part, "offset" FROM audit_log ORDER BY event_id, action'
    ).fetchall()


def test_copy_and_dedup_paths_end_in_the_same_tables(stack) -> None:
    """A batch that is all new goes in by COPY; the same stream forced through the careful
    (dedup) path must leave every table, the audit log included, exactly the same."""
    events = generate(SynthConfig(sites=3, files_per_site=5, pages_per_file=8, seed=7,
                                  removed_share=0.1, rescan_share=0.1))
    recs = records(events)
    dumps, audits = [], []
    for copy_first in (True, False):
        dsn = fresh_db(stack)
        with psycopg.connect(dsn) as conn:
            applier = BatchApplier(conn, "g", copy_first=copy_first)
            paths = []
            for i in range(0, len(recs), 45):
                with conn.transaction():
                    paths.append(applier.apply(recs[i:i + 45]).path)
            assert set(paths) == {"copy" if copy_first else "dedup"}, paths
            dumps.append(dump(conn))
            audits.append(_audit_rows(conn))
    assert dumps[0]["page_revisions"] and dumps[0]["page_removals"]
    assert_same_tables(dumps[0], dumps[1])
    assert audits[0] == audits[1]


def test_a_replay_or_a_second_event_for_a_stored_revision_takes_the_dedup_path(stack) -> None:
    p1, p2, p3 = page(no=1), page(no=2), page(no=3)
    # Page 2's revision 1 again, other content: another event for a stored page revision.
    p2b = page(no=2, content="re-hashed", t=T0 + timedelta(minutes=5))
    batches = [[p1, p2], [p1, p3], [p2b]]
    expected = [("copy", 2, 0), ("dedup", 1, 1), ("dedup", 1, 0)]
    dumps, audits = [], []
    for copy_first in (True, False):
        dsn = fresh_db(stack)
        with psycopg.connect(dsn) as conn:
            applier = BatchApplier(conn, "g", copy_first=copy_first)
            start = 0
            for batch, (path, applied, dups) in zip(batches, expected, strict=True):
                with conn.transaction():
                    res = applier.apply(records(batch, start=start))
                start += len(batch)
                assert (sum(res.applied.values()), res.duplicates) == (applied, dups)
                assert res.path == (path if copy_first else "dedup")
            assert one(conn, "SELECT sha256 FROM page_revisions WHERE number = 2") == (
                p2b.sha256,)
            assert one(conn, "SELECT sha256 FROM pages WHERE number = 2") == (p2b.sha256,)
            dumps.append(dump(conn))
            audits.append(_audit_rows(conn))
    assert_same_tables(dumps[0], dumps[1])
    assert audits[0] == audits[1]  # nothing left behind by the COPYs that were rolled back


def test_whole_numbers_written_as_decimals_are_counted(pg) -> None:
    """The contract reads 4.0 as the integer 4 (pydantic, lax mode), so the tables must too:
    before this, PostgreSQL refused "4.0" as an integer and each such event, valid as it was,
    ended as a dead letter."""
    _dsn, conn = pg
    p1 = page(no=1)
    ref = ref_of(p1)
    events = [
        p1,
        FileManifest(site_id="xa-a", file_code="F1", expected_pages=4, priority=2),
        FileAssembled(site_id="xa-a", file_code="F1", pages=[ref], gaps=[2, 3],
                      duplicate_page_nos=[1], expected_pages=4, count_mismatch=True),
        OcrFailed(site_id="xa-a", file_code="F1", reason="timeout", attempts=3),
        FileVerdict(site_id="xa-a", file_code="F1", verdict="needs_rescan", pages_total=4,
                    pages_accepted=1),
        SiteHeartbeat(site_id="xa-a", agent_version="1", outbox_depth=7,
                      disk_free_bytes=10**12),
        DeadLetter(site_id="xa-a", source="agent", topic="t", partition=2, offset=9,
                   reason="bad"),
    ]
    whole = {"expected_pages", "priority", "gaps", "duplicate_page_nos", "attempts",
             "pages_total", "pages_accepted", "outbox_depth", "disk_free_bytes", "partition",
             "offset"}

    def as_decimals(value):
        return ([float(v) for v in value] if isinstance(value, list) else float(value))

    recs = []
    for i, ev in enumerate(events):
        doc = json.loads(ev.to_json())
        doc.update({k: as_decimals(v) for k, v in doc.items() if k in whole})
        raw = json.dumps(doc).encode()
        assert parse_event(raw) == ev  # the contract takes it, and reads the same event
        recs.append(Record("t", 0, i, raw))
    with conn.transaction():
        res = BatchApplier(conn, "g").apply(recs)
    assert not res.dead_letters
    assert sum(res.applied.values()) == len(events)
    assert one(conn, "SELECT expected_pages, priority FROM files") == (4, 2)
    assert one(conn, "SELECT gaps, duplicate_page_nos, expected_pages FROM file_assemblies") \
        == ([2, 3], [1], 4)
    assert one(conn, "SELECT attempts FROM ocr_results") == (3,)
    assert one(conn, "SELECT pages_total, pages_accepted FROM verdicts") == (4, 1)
    assert one(conn, "SELECT outbox_depth, disk_free_bytes FROM site_heartbeats") \
        == (7, 10**12)
    assert one(conn, 'SELECT part, "offset" FROM dead_letters') == (2, 9)


def _wait_until_blocked(dsn: str, pid: int, finished: Callable[[], bool] = lambda: False,
                        timeout_s: float = 20.0) -> None:
    """Return once backend ``pid`` waits for a lock, or its work has ``finished`` without
    waiting (the interleaving a test needs, whichever way the code under test goes)."""
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(dsn, autocommit=True) as watch:
        while time.monotonic() < deadline:
            row = watch.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone()
            if row == ("Lock",) or finished():
                return
            time.sleep(0.02)
    raise AssertionError(f"backend {pid} neither waited for a lock nor finished")


def test_two_consumers_counting_one_site_day_lose_no_page(pg) -> None:
    """Two consumers of one group (each its own partitions, so its own files) write the same
    site and day at once. Before the fix the second one's daily count came from a snapshot
    taken before the first one committed, and it overwrote the first one's count: the
    day showed 3 pages where 6 were stored."""
    dsn, conn = pg
    apply_events(conn, [page(code="F0", no=1)])  # the site and its day exist, committed
    conn.commit()
    first = BatchApplier(conn, "g")
    other = psycopg.connect(dsn)
    second = BatchApplier(other, "g")
    try:
        # The first consumer's batch is written, not yet committed…
        first.apply(records([page(code="F1", no=n, t=T0 + timedelta(minutes=n))
                             for n in (1, 2, 3)], partition=0))
        # …when the second one writes its batch for the same site and day.
        with ThreadPoolExecutor(1) as pool:
            def second_batch() -> None:
                with other.transaction():
                    second.apply(records([page(code="F2", no=n, t=T0 + timedelta(minutes=n))
                                          for n in (1, 2)], partition=1))
            done = pool.submit(second_batch)
            _wait_until_blocked(dsn, other.info.backend_pid)
            conn.commit()
            done.result(timeout=30)
    finally:
        other.close()
    day = T0.astimezone(ZoneInfo("Asia/Ho_Chi_Minh")).date()
    assert one(conn, "SELECT count(*) FROM pages") == (6,)
    assert one(conn, "SELECT pages_scanned FROM daily_progress WHERE site_id = 'xa-a' "
                     "AND day = %s", day) == (6,)


def test_a_plan_moving_a_site_to_another_time_zone_redates_pages_being_written(pg) -> None:
    """A plan import that changes a site's time zone re-dates its pages and days. Before the
    fix, a batch written but not committed when the import ran kept its pages on the day of
    the old zone (the import could not see them): 20:00 UTC stayed on 04/03 (Hà Nội) where
    the site now counts 03/03 (UTC)."""
    dsn, conn = pg
    apply_events(conn, [page(code="F0", no=1)])  # 09:00 Hà Nội on 03/03: the site exists
    conn.commit()
    late = datetime(2026, 3, 3, 20, 0, tzinfo=UTC)  # 04/03 in Hà Nội, 03/03 in UTC
    writer = BatchApplier(conn, "g")
    writer.apply(records([page(code="F1", no=1, t=late)]))  # written, not committed
    plan = [PlanRow(2, "xa-a", "UBND xã A", None, 100, 2, date(2026, 10, 31), None, "UTC",
                    dt_time(7, 30), dt_time(17, 0))]
    importer = psycopg.connect(dsn)
    try:
        with ThreadPoolExecutor(1) as pool:
            done = pool.submit(import_plan, importer, plan, name="Kế hoạch", source="test")
            # Before the fix the import did not wait at all: it finished first.
            _wait_until_blocked(dsn, importer.info.backend_pid, done.done)
            conn.commit()
            done.result(timeout=30)
    finally:
        importer.close()
    assert conn.execute(
        "SELECT file_code, scan_day FROM pages ORDER BY 1").fetchall() == [
            ("F0", date(2026, 3, 3)), ("F1", date(2026, 3, 3))]
    assert conn.execute("SELECT day, pages_scanned FROM daily_progress "
                        "WHERE site_id = 'xa-a' ORDER BY day").fetchall() == [
                            (date(2026, 3, 3), 2)]
