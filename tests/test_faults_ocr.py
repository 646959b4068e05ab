"""kill -9 of the OCR worker (`sohoa streams --role ocr`) during a real OCR run fed by the real
agent: after its restart every file has exactly one output PDF and exactly one verdict
(real Kafka, PostgreSQL, Tesseract)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sohoa.events import OcrCompleted
from sohoa.samples import PageSpec, write_page
from tests.pages import text_lines
from tests.procs import wait_for
from tests.test_faults import PAUSE_S, Spine, read_events

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.ocr]

FILES = int(os.environ.get("SOHOA_FAULT_OCR_FILES", "3"))
PAGES_PER_FILE = 2


def test_kill9_ocr_worker_during_ocr(stack, tmp_path: Path) -> None:
    spine = Spine(stack, tmp_path, "phuong-ocr-kill", ocr=True, SOHOA_OCR__BACKOFF_S="1")
    spine.start()
    codes = [f"HS-{k:05d}" for k in range(FILES)]
    try:
        for k, code in enumerate(codes):
            folder = spine.root / "UBND" / code
            for n in range(1, PAGES_PER_FILE + 1):
                spec = PageSpec(seed=k * 10 + n, text=text_lines(8, k * 3 + n))
                tmp = write_page(folder / f".{n}.tmp.png", spec)
                os.replace(tmp, folder / f"{n:04d}.png")
        time.sleep(2)  # pages stable before the files are closed
        for code in codes:
            (spine.root / "UBND" / code / "DONE").touch()
        work = tmp_path / "faust" / spine.env["SOHOA_STREAMS__OCR_APP_ID"] / "work"
        wait_for(lambda: work.exists() and any(work.iterdir()), 240, "an OCR job running",
                 spine.alive_procs(), interval=0.2)
        time.sleep(1.5)  # inside ocrmypdf
        assert spine.pg_verdict_files() < FILES, "every verdict was in before the kill"
        spine.kill9("ocr")
        time.sleep(PAUSE_S)
        spine.start("ocr")
        pages = FILES * PAGES_PER_FILE
        spine.files_expected = lambda count=pages: set(codes)  # type: ignore[method-assign]
        spine.wait_settled(pages=pages, timeout=480)
        spine.assert_exact(pages=pages)
        for code in codes:
            pdfs = sorted((tmp_path / "ocr").rglob(f"{code}/*.pdf"))
            assert len(pdfs) == 1, (code, pdfs)
        done = [e for e in read_events(stack, spine.env["SOHOA_TOPICS__FILE_EVENTS"],
                                       {"OcrCompleted"}) if isinstance(e, OcrCompleted)]
        ids = {c: {e.event_id for e in done if e.file_code == c} for c in codes}
        assert all(len(v) == 1 for v in ids.values()), f"OcrCompleted per file: {ids}"
    finally:
        spine.stop_all()
