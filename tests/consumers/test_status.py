"""`sohoa status` (table and JSON) and the consumer's PostgreSQL-backed gauges."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from consumers.metrics import ProgressCollector
from sohoa.config import Settings
from sohoa.events import SiteHeartbeat
from tests.support.procs import run_sohoa
from tests.support.progress_store import apply_events, fresh_db
from tests.support.store_events import page

pytestmark = pytest.mark.integration


@pytest.fixture
def planned(stack, tmp_path):
    dsn = fresh_db(stack, "status")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn, "COLUMNS": "250"}
    plan = tmp_path / "plan.csv"
    plan.write_text("site_id,unit,contractor,target_pages,target_files,deadline\n"
                    "xa-a,Huyện A,Cty X,100,4,31/12/2030\n", encoding="utf-8")
    assert run_sohoa(["campaign", "import", str(plan)], env).returncode == 0
    now = datetime.now(UTC)
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [page(site="xa-a", code="F1", no=i, t=now - timedelta(minutes=9 - i))
                            for i in range(1, 4)]
                     + [page(site="xa-moi", code="F9", no=1, t=now),
                        SiteHeartbeat(site_id="xa-a", agent_version="0.1.0", outbox_depth=7,
                                      oldest_unsent_age_s=12.5, occurred_at=now)])
    return env, dsn


def test_status_json_and_table(planned) -> None:
    env, _dsn = planned
    st = json.loads(run_sohoa(["status", "--json"], env).stdout)
    sites = {s["site_id"]: s for s in st["sites"]}
    assert (sites["xa-a"]["pages"], sites["xa-a"]["files"]) == (3, 1)
    assert sites["xa-a"]["remaining_pages"] == 97
    assert sites["xa-a"]["outbox_depth"] == 7
    assert sites["xa-moi"]["auto_created"] is True
    files = {(f["site_id"], f["file_code"]): f for f in st["files"]}
    assert files[("xa-a", "F1")]["state"] == "scanning"
    assert files[("xa-a", "F1")]["pages"] == 3
    table = run_sohoa(["status"], env)
    assert table.returncode == 0, table.stderr
    assert "xa-a" in table.stdout and "xa-moi" in table.stdout
    assert "chưa có kế hoạch" in table.stdout
    one = run_sohoa(["status", "--site", "xa-a"], env)
    assert "F1" in one.stdout and "đang quét" in one.stdout and "xa-moi" not in one.stdout


def test_gauges_come_from_postgres(planned) -> None:
    _env, dsn = planned
    settings = Settings(postgres={"dsn": dsn}, consumer={"gauge_cache_s": 60})
    reg = CollectorRegistry()
    collector = ProgressCollector(settings)
    reg.register(collector)
    text = generate_latest(reg).decode()
    assert 'sohoa_site_pages_scanned{site="xa-a"} 3.0' in text
    assert 'sohoa_site_pages_scanned{site="xa-moi"} 1.0' in text
    assert 'sohoa_site_target_pages{site="xa-a"} 100.0' in text
    assert 'sohoa_site_remaining_pages{site="xa-a"} 97.0' in text
    assert 'sohoa_site_outbox_depth{site="xa-a"} 7.0' in text
    assert 'sohoa_site_oldest_unsent_seconds{site="xa-a"} 12.5' in text
    assert 'sohoa_files{site="xa-a",state="scanning"} 1.0' in text
    # States without files are 0, not absent (a board's query must not go empty).
    assert 'sohoa_files{site="xa-a",state="assembled"} 0.0' in text
    assert 'sohoa_files{site="xa-moi",state="accepted"} 0.0' in text
    assert 'sohoa_site_working_now{site="xa-a"}' in text
    assert "sohoa_consumer_store_up 1.0" in text
    assert ('sohoa_site_info{contractor="Cty X",name="xa-a",site="xa-a",unit="Huyện A",'
            'unit_key="huyen-a"} 1.0') in text
    assert ('sohoa_site_info{contractor="",name="xa-moi",site="xa-moi",unit="chưa rõ",'
            'unit_key="chua-ro"} 1.0') in text
    deadline = next(ln for ln in text.splitlines()
                    if ln.startswith('sohoa_site_deadline_timestamp_seconds{site="xa-a"}'))
    ts = float(deadline.split()[-1])
    assert datetime.fromtimestamp(ts, UTC).date() in (date(2030, 12, 31),)
    assert "F1" not in text  # no file codes in labels
    # Cached: a new page does not show until the cache expires.
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [page(site="xa-a", code="F1", no=4)])
    assert 'sohoa_site_pages_scanned{site="xa-a"} 3.0' in generate_latest(reg).decode()
    collector.cache_s = 0
    assert 'sohoa_site_pages_scanned{site="xa-a"} 4.0' in generate_latest(reg).decode()


def test_status_on_an_unmigrated_database_says_what_to_do(stack) -> None:
    env = {**stack.env, "SOHOA_POSTGRES__DSN": stack.new_database("empty")}
    out = run_sohoa(["status"], env)
    assert out.returncode == 1
    assert "sohoa db migrate" in out.stderr and "Traceback" not in out.stderr


def test_page_counts_that_can_fall_are_gauges(planned) -> None:
    """Removing a page lowers the scanned count; exported as a counter, Prometheus would read
    the fall as a reset and increase() would spike."""
    from prometheus_client.parser import text_string_to_metric_families

    from sohoa.events import PageRemoved
    from tests.support.store_events import page

    _env, dsn = planned
    settings = Settings(postgres={"dsn": dsn}, consumer={"gauge_cache_s": 0})
    reg = CollectorRegistry()
    reg.register(ProgressCollector(settings))

    def families() -> dict:
        return {f.name: f for f in text_string_to_metric_families(generate_latest(reg).decode())}

    def scanned(fams: dict) -> float:
        return next(s.value for s in fams["sohoa_site_pages_scanned"].samples
                    if s.labels == {"site": "xa-a"})

    before = families()
    for name in ("sohoa_site_pages_scanned", "sohoa_site_pages_accepted",
                 "sohoa_site_qc_failed_pages"):
        assert before[name].type == "gauge", name
        assert not name.endswith("_total")
    gone = page(site="xa-a", code="F1", no=3)
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [PageRemoved(site_id="xa-a", fonds=gone.fonds, file_code="F1",
                                        document=gone.document, sha256=gone.sha256)])
    assert (scanned(before), scanned(families())) == (3.0, 2.0)


def test_status_json_and_metrics_agree_on_fonds_documents_and_pages(stack) -> None:
    """A file of two fonds-mates (same code, two fonds) and a multi-page PDF: status, the
    site's figures and /metrics give the same pages, documents and checked pages."""
    from tests.support.store_events import checked, document

    dsn = fresh_db(stack, "status")
    env = {**stack.env, "SOHOA_POSTGRES__DSN": dsn, "COLUMNS": "250"}
    a = document("QD-01.pdf", 12, fonds="A") + document("001.tif", 1, fonds="A", minutes=1)
    b = document("001.tif", 1, fonds="B", content="b", minutes=2)
    with psycopg.connect(dsn) as conn:
        apply_events(conn, a + b + [checked(p) for p in a[:5]])
    st = json.loads(run_sohoa(["status", "--json"], env).stdout)
    files = {(f["fonds"], f["file_code"]): f for f in st["files"]}
    assert {k: (f["documents"], f["pages"], f["checked_pages"]) for k, f in files.items()} == {
        ("A", "HS-01"): (2, 13, 5), ("B", "HS-01"): (1, 1, 0)}
    (site,) = st["sites"]
    assert (site["pages"], site["documents"], site["files"], site["checked_pages"]) == (
        14, 3, 2, 5)
    reg = CollectorRegistry()
    reg.register(ProgressCollector(Settings(postgres={"dsn": dsn})))
    text = generate_latest(reg).decode()
    assert 'sohoa_site_pages_scanned{site="xa-a"} 14.0' in text
    assert 'sohoa_site_documents_scanned{site="xa-a"} 3.0' in text
    assert 'sohoa_site_checked_pages{site="xa-a"} 5.0' in text
    table = run_sohoa(["status", "--site", "xa-a"], env).stdout
    assert "Văn bản" in table and "Đã kiểm tra" in table
    row = next(line for line in table.splitlines() if "HS-01" in line and " A " in line)
    assert [c.strip() for c in row.split("│")[5:8]] == ["2", "13", "5"]


def test_status_shows_how_far_a_file_in_ocr_has_got(planned) -> None:
    """Issue 22: pages done of pages while a file's OCR runs, gone once its OCR is done."""
    from sohoa.events import FileAssembled, OcrCompleted, OcrProgress, PageRef, PageText
    from tests.support.store_events import page

    env, dsn = planned
    now = datetime.now(UTC)
    pgs = [page(site="xa-a", code="F1", no=i, t=now - timedelta(minutes=9 - i))
           for i in range(1, 4)]
    refs = [PageRef(document=p.document, number=p.number, uri=p.uri,
                    document_sha256=p.document_sha256, sha256=p.sha256) for p in pgs]
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [
            FileAssembled(site_id="xa-a", file_code="F1", pages=refs, occurred_at=now),
            OcrProgress(site_id="xa-a", file_code="F1", pages_done=2, pages_total=3,
                        occurred_at=now + timedelta(seconds=5))])

    def f1() -> dict:
        st = json.loads(run_sohoa(["status", "--json"], env).stdout)
        return next(f for f in st["files"] if f["file_code"] == "F1")

    assert (f1()["ocr_pages_done"], f1()["ocr_pages_total"]) == (2, 3)
    table = run_sohoa(["status", "--site", "xa-a"], env).stdout
    assert "Đang OCR" in table and "2/3 trang" in table
    with psycopg.connect(dsn) as conn:
        apply_events(conn, [OcrCompleted(
            site_id="xa-a", file_code="F1", output_uri="file:///o.pdf", output_sha256="b" * 64,
            pages=[PageText(document=p.document, chars=10) for p in pgs],
            occurred_at=now + timedelta(seconds=9))])
    assert (f1()["ocr_pages_done"], f1()["ocr_pages_total"]) == (None, None)


def test_a_scrape_serves_the_last_gauges_while_the_tables_cannot_be_read(planned) -> None:
    """/metrics never waits for the tables but on its first scrape: a refresh runs in the
    background (at 3,321 sites it is most of a second of CPU, many seconds on a loaded host,
    past Prometheus' scrape timeout), and the scrape gets the last rendering."""
    import time
    import urllib.request

    from consumers.db import scalar
    from consumers.metrics import ConsumerMetrics, start_metrics_server
    from infra.procs import free_port
    from tests.support.procs import wait_for

    _env, dsn = planned
    settings = Settings(postgres={"dsn": dsn}, consumer={
        "gauge_cache_s": 0, "metrics_host": "127.0.0.1", "metrics_port": free_port()})
    server = start_metrics_server(settings, ConsumerMetrics())
    url = f"http://127.0.0.1:{settings.consumer.metrics_port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def scanned(text: str) -> str:
        return next(ln.split()[-1] for ln in text.splitlines()
                    if ln.startswith('sohoa_site_pages_scanned{site="xa-a"}'))

    locker = psycopg.connect(dsn)
    try:
        assert scanned(scrape()) == "3.0"
        with psycopg.connect(dsn) as conn:
            apply_events(conn, [page(site="xa-a", code="F1", no=4)])
        locker.execute("LOCK TABLE sites IN ACCESS EXCLUSIVE MODE")  # no reader gets through
        t0 = time.monotonic()
        text = scrape()                      # begins a refresh, which waits on the lock
        assert scanned(text) == "3.0" and "sohoa_consumer_events_applied" in text

        def blocked() -> bool:
            with psycopg.connect(dsn, autocommit=True) as c:
                return bool(scalar(
                    c, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND wait_event_type = 'Lock'"))
        wait_for(blocked, 30, "the refresh waiting on the locked table")
        assert scanned(scrape()) == "3.0"    # still served, while the refresh waits
        assert time.monotonic() - t0 < 30
        locker.rollback()
        wait_for(lambda: scanned(scrape()) == "4.0", 30, "the gauges refreshed")
    finally:
        locker.close()
        server.shutdown()
