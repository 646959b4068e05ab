"""kill -9 of the streams during OCR, after some files got their verdict and before the others,
then a restart: every file ends with exactly one output, made once, and one verdict, and the
assembly table is rebuilt from its changelog (real Kafka, real Faust workers, real Tesseract)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from sohoa.events import Event, FileAssembled, FileVerdict, OcrCompleted, Verdict
from tests.support import pages
from tests.support.pages import PageSpec
from tests.support.procs import SohoaProcess, wait_for
from tests.support.streams_helpers import closed, manifest, page_event, read_all, send, streams_env

pytestmark = [pytest.mark.integration, pytest.mark.ocr]
SITE = "phuong-an-cuu"


def test_kill9_during_ocr_then_restart(stack, tmp_path: Path) -> None:
    # One file in OCR at a time, so the kill can land between two files' verdicts.
    env = streams_env(stack, tmp_path, ocr=True, SOHOA_QC__WORKERS="1",
                      SOHOA_OCR__BACKOFF_S="1", SOHOA_OCR__CONCURRENCY="1")
    site_topic, file_topic = env["SOHOA_TOPICS__SITE_EVENTS"], env["SOHOA_TOPICS__FILE_EVENTS"]
    hot = tmp_path / "hot" / "UBND"
    events: list[Event] = []
    codes = ["HS-K1", "HS-K2", "HS-K3"]
    # The later files long enough to be in OCR for seconds: the kill waits for one of them.
    sizes = {"HS-K1": 2, "HS-K2": 12, "HS-K3": 12}
    for k, code in enumerate(codes):
        events.append(manifest(SITE, code, sizes[code]))
        for n in range(1, sizes[code] + 1):
            f = pages.write_page(hot / code / f"{n:03d}.png",
                                 PageSpec(seed=k * 100 + n, noise=0.0005,
                                          text=pages.text_lines(8, k * 3 + n)))
            events.append(page_event(SITE, code, n, f))
    # HS-OPEN: pages before the crash, closed only after the restart -> needs the changelog.
    open_pages = [pages.write_page(hot / "HS-OPEN" / f"{n:03d}.png",
                                   PageSpec(seed=90 + n, text=pages.text_lines(8, 10 + n)))
                  for n in (1, 2)]
    events += [page_event(SITE, "HS-OPEN", n, f) for n, f in zip((1, 2), open_pages,
                                                                strict=True)]
    work = tmp_path / "faust" / env["SOHOA_STREAMS__OCR_APP_ID"] / "work"
    first = SohoaProcess(["streams"], env, tmp_path / "first.log")

    def verdict_files() -> set[str]:
        return {e.file_code for e in read_all(stack, file_topic) if isinstance(e, FileVerdict)}

    try:
        send(stack, site_topic, events)
        wait_for(lambda: work.exists() and any(work.iterdir()) and verdict_files(), 300,
                 "a verdict, and the next file in OCR", (first,), interval=0.2)
    finally:
        first.kill9()
    assert first.proc.returncode == -9
    time.sleep(1)  # what the dead worker's sockets still held has landed by now
    # The independent count at the kill: verdicts on Kafka, PDFs on disk.
    at_kill = verdict_files()
    partial = {p: (p.stat().st_ino, p.stat().st_mtime_ns)
               for p in (tmp_path / "ocr").rglob("*.pdf")}
    assert 1 <= len(at_kill) < len(codes), f"verdicts at the kill: {at_kill}"
    assert {p.parent.name for p in partial} >= at_kill, (partial, at_kill)
    assert len(partial) < len(codes), f"every PDF was made before the kill: {partial}"
    second = SohoaProcess(["streams"], env, tmp_path / "second.log")
    try:
        send(stack, site_topic, [closed(SITE, "HS-OPEN")])
        want = {*codes, "HS-OPEN"}

        def all_verdicts():
            vs = [e for e in read_all(stack, file_topic) if isinstance(e, FileVerdict)]
            return vs if {v.file_code for v in vs} >= want else None

        wait_for(all_verdicts, 400, "a verdict for every file after the restart", (second,),
                 interval=2.0)
        time.sleep(3)  # anything still to come (a duplicate) would show up now
        evs = read_all(stack, file_topic)
    finally:
        second.stop()
    # The PDFs made before the kill were reused, not made again.
    for p, stamp in partial.items():
        assert (p.stat().st_ino, p.stat().st_mtime_ns) == stamp, f"{p} was made again"
    for code in want:
        verdict_ids = {e.event_id for e in evs if isinstance(e, FileVerdict)
                       and e.file_code == code}
        assert len(verdict_ids) == 1, (code, verdict_ids)
        v = next(e for e in evs if isinstance(e, FileVerdict) and e.file_code == code)
        assert v.verdict == Verdict.ACCEPTED, (code, v.reasons)
        outs = sorted((tmp_path / "ocr" / SITE / "UBND" / code).iterdir())
        assert [p.name for p in outs] == ["r1.json", "r1.pdf", "r1.txt"], (code, outs)
        done = [e for e in evs if isinstance(e, OcrCompleted) and e.file_code == code]
        assert len({e.event_id for e in done}) == 1
        assert hashlib.sha256(outs[1].read_bytes()).hexdigest() == done[-1].output_sha256
    fa = [e for e in evs if isinstance(e, FileAssembled) and e.file_code == "HS-OPEN"]
    assert [p.number for p in fa[0].pages] == [1, 2]   # pages known only from the changelog
