"""kill -9 while a 300-page PDF is in flight, with real parts: the real agent, Kafka, both
Faust apps (QC on, OCR off) and the consumer. The document's pages count once, whatever dies
where, against the test's own count of the pages it wrote; and each test shows its fault
really landed mid-flight (not before the document was seen, not after it was done).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest

from infra.stack import run_env
from sohoa.events import PageChecked, PageScanned
from sohoa.samples import page_jpegs, scanner_pdf
from tests.support.procs import SohoaProcess, run_sohoa, wait_for
from tests.support.typed_events import only
from tests.support.watch_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PAGES = 300
SITE = "xa-vb-dai"


def long_pdf(path: Path, pages: int = PAGES) -> Path:
    """A scanner's 300-page PDF: A4 at 200 dpi, one JPEG per page, each page its own image."""
    return scanner_pdf(path, page_jpegs(pages))


class Run:
    def __init__(self, stack, tmp_path: Path) -> None:
        self.stack = stack
        self.tmp = tmp_path
        self.root = tmp_path / "hot"
        self.root.mkdir()
        topics = stack.new_topics()
        self.outbox = tmp_path / "outbox.sqlite3"
        self.env = {
            **stack.env, **run_env("vb", tmp_path, ocr=False),
            "SOHOA_LOGGING__JSON": "true",
            "SOHOA_TOPICS__SITE_EVENTS": topics.site_events,
            "SOHOA_TOPICS__FILE_EVENTS": topics.file_events,
            "SOHOA_TOPICS__DEAD_LETTERS": topics.dead_letters,
            "SOHOA_POSTGRES__DSN": stack.new_database("vb"),
            "SOHOA_WATCHER__SITE_ID": SITE,
            "SOHOA_WATCHER__ROOTS": json.dumps([str(self.root)]),
            "SOHOA_WATCHER__OUTBOX_PATH": str(self.outbox),
            "SOHOA_WATCHER__STABILITY_WINDOW_S": "0.5",
            "SOHOA_WATCHER__HEARTBEAT_INTERVAL_S": "5",
            "SOHOA_STREAMS__QC_ENABLED": "true",
            "SOHOA_STREAMS__SITE_DUPLICATE_CHECK": "false",
            "SOHOA_OCR__ENABLED": "false",
            "SOHOA_QC__WORKERS": "2",
            "SOHOA_QC__PAGES_PER_TASK": "10",
        }
        assert run_sohoa(["db", "migrate"], self.env).returncode == 0
        self.procs: dict[str, SohoaProcess] = {}
        self.starts: dict[str, int] = {}

    def start(self, name: str, args: list[str]) -> None:
        self.starts[name] = self.starts.get(name, 0) + 1
        self.procs[name] = SohoaProcess(args, self.env,
                                        self.tmp / "logs" / f"{name}.{self.starts[name]}.log")

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()

    def sql(self, query: str, *args: object) -> list[tuple]:
        with psycopg.connect(self.env["SOHOA_POSTGRES__DSN"], connect_timeout=3) as c:
            return c.execute(query, args).fetchall()

    def file_row(self) -> tuple | None:
        rows = self.sql("SELECT pages, documents, checked_pages, state FROM files "
                        "WHERE site_id = %s AND file_code = 'HS-DAI'", SITE)
        return rows[0] if rows else None

    def settled(self) -> tuple:
        def done():
            row = self.file_row()
            return row if row and row[3] == "accepted" and row[2] == PAGES else None
        # A restarted worker waits out the killed one's group session (about a minute) first.
        return wait_for(done, 900, "the 300-page document accepted, every page checked",
                        tuple(self.procs.values()), interval=2.0)

    def assert_counted_once(self) -> None:
        pages, documents, checked, state = self.settled()
        assert (pages, documents, checked, state) == (PAGES, 1, PAGES, "accepted")
        # The independent count: the pages the test wrote, each exactly once in every table.
        rows = self.sql("SELECT count(*), count(DISTINCT page_index), min(page_index), "
                        "max(page_index) FROM pages WHERE site_id = %s AND NOT removed", SITE)
        assert rows == [(PAGES, PAGES, 1, PAGES)]
        assert self.sql("SELECT count(*) FROM page_revisions WHERE site_id = %s",
                        SITE) == [(PAGES,)]
        assert self.sql("SELECT sum(pages_scanned) FROM daily_progress WHERE site_id = %s",
                        SITE) == [(PAGES,)]
        assert self.sql("SELECT pages_total, pages_accepted FROM verdicts WHERE site_id = %s",
                        SITE) == [(PAGES, PAGES)]
        assert self.sql("SELECT count(*) FROM dead_letters") == [(0,)]
        site = next(s for s in json.loads(run_sohoa(["status", "--json"], self.env).stdout)
                    ["sites"] if s["site_id"] == SITE)
        assert site["pages"] == PAGES


def test_kill9_of_the_agent_with_a_300_page_pdf_in_its_outbox(stack, tmp_path: Path) -> None:
    """The broker is frozen while the agent reads the document, so its 300 pages wait in the
    outbox; the agent is killed there and restarted: every page counts once."""
    run = Run(stack, tmp_path)
    run.start("consume", ["consume"])
    run.start("streams", ["streams", "--role", "all"])
    run.start("watch", ["watch"])
    try:
        # The agent's producer connected (its first heartbeat landed) before the freeze: the
        # pages it sends then sit in the frozen broker's socket, in flight at the kill.
        wait_for(lambda: any(e.NAME == "SiteHeartbeat" for e in read_topic(
            stack, run.env["SOHOA_TOPICS__SITE_EVENTS"], 500)), 60,
            "the agent's first heartbeat on Kafka", (run.procs["watch"],))
        stack.pause_kafka()
        try:
            long_pdf(run.root / "UBND" / "HS-DAI" / "QD-2024-01.pdf")
            (run.root / "UBND" / "HS-DAI" / "DONE").touch()

            def queued() -> int | None:
                with sqlite3.connect(f"file:{run.outbox}?mode=ro", uri=True) as db:
                    n = db.execute("SELECT count(*) FROM outbox WHERE etype = 'PageScanned' "
                                   "AND sent IS NULL").fetchone()[0]
                return n if n >= PAGES else None

            in_outbox = wait_for(queued, 120, "the document's pages in the outbox",
                                 (run.procs["watch"],))
            run.procs["watch"].kill9()
            assert not run.procs["watch"].alive()
        finally:
            stack.resume_kafka()
        # The fault landed mid-flight: all 300 pages recorded, none acknowledged. Pages the
        # agent had written to the frozen broker's socket before the kill (when its producer
        # was connected before the freeze) land now that the broker runs again: the restarted
        # agent sends them a second time, under the same ids.
        assert in_outbox == PAGES
        early = only(read_topic(stack, run.env["SOHOA_TOPICS__SITE_EVENTS"], 2000), PageScanned)
        run.start("watch", ["watch"])
        run.assert_counted_once()
        evs = only(read_topic(stack, run.env["SOHOA_TOPICS__SITE_EVENTS"], 2000), PageScanned)
        assert len(evs) >= len(early) + PAGES, (len(early), len(evs))  # all sent again
        assert len({e.event_id for e in evs}) == PAGES  # re-sends keep their ids
        assert {e.page_index for e in evs} == set(range(1, PAGES + 1))
    finally:
        stack.resume_kafka()
        run.stop_all()


@pytest.mark.timeout(1200)
def test_kill9_of_the_qc_worker_halfway_through_a_300_page_pdf(stack, tmp_path: Path) -> None:
    """The QC worker is killed when some, not all, of the document's pages are checked; once
    restarted, every page is checked and the file judged once per revision."""
    run = Run(stack, tmp_path)
    run.start("consume", ["consume"])
    run.start("assembly", ["streams", "--role", "assembly"])
    run.start("qc", ["streams", "--role", "ocr"])
    run.start("watch", ["watch"])
    try:
        long_pdf(run.root / "UBND" / "HS-DAI" / "QD-2024-01.pdf")
        (run.root / "UBND" / "HS-DAI" / "DONE").touch()

        def halfway() -> int | None:
            checked = [e for e in read_topic(stack, run.env["SOHOA_TOPICS__FILE_EVENTS"], 500)
                       if e.NAME == "PageChecked"]
            return len(checked) if len(checked) >= 20 else None

        at_kill = wait_for(halfway, 240, "the QC worker under way", tuple(run.procs.values()),
                           interval=0.5)
        run.procs["qc"].kill9()
        assert not run.procs["qc"].alive()
        verdicts = [e for e in read_topic(stack, run.env["SOHOA_TOPICS__FILE_EVENTS"], 1000)
                    if e.NAME == "FileVerdict"]
        # The kill landed halfway: some pages checked, the file not yet judged.
        assert 20 <= at_kill < PAGES and verdicts == []
        run.start("qc", ["streams", "--role", "ocr"])
        run.assert_counted_once()
        file_events = read_topic(stack, run.env["SOHOA_TOPICS__FILE_EVENTS"], 2000)
        verdict_ids = {e.event_id for e in file_events if e.NAME == "FileVerdict"}
        assert len(verdict_ids) == 1, "one verdict for the file's one revision"
        checked = {(e.page_index, e.revision) for e in only(file_events, PageChecked)}
        assert checked == {(i, 1) for i in range(1, PAGES + 1)}
        assert run.starts == {"consume": 1, "assembly": 1, "qc": 2, "watch": 1}
    finally:
        run.stop_all()
