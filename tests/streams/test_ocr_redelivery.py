"""A FileAssembled delivered twice at once (a rebalance re-delivers what was not committed)
runs OCR once: both answers carry the one PDF on disk (real Tesseract, no Kafka)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from sohoa.config import Settings
from sohoa.events import FileAssembled, OcrCompleted, OcrFailed, PageRef
from streams.app_ocr import FileProcessor
from streams.ocr_pool import EnginePool
from tests.support import pages
from tests.support.pages import PageSpec

pytestmark = pytest.mark.ocr


def test_same_file_twice_at_once_is_ocred_once(tmp_path: Path, monkeypatch) -> None:
    runs: list[str] = []
    real_run = EnginePool.run

    def counting_run(self, job, timeout, progress=None):
        runs.append(job.work_dir)
        return real_run(self, job, timeout, progress)

    monkeypatch.setattr(EnginePool, "run", counting_run)
    page = pages.write_page(tmp_path / "hot" / "001.png", PageSpec(seed=3,
                                                                   text=pages.text_lines(6, 1)))
    sha = hashlib.sha256(page.read_bytes()).hexdigest()
    fa = FileAssembled(site_id="xa-a", fonds="UBND", file_code="HS-1", pages=[PageRef(
        document="001.png", number=1, uri=page.resolve().as_uri(), document_sha256=sha,
        sha256=sha)])
    settings = Settings(ocr={"output_dir": tmp_path / "ocr", "concurrency": 2},
                        streams={"data_dir": tmp_path / "faust"},
                        sources={"sites": {"xa-a": {"roots": [tmp_path / "hot"]}}})

    async def publish(_ev) -> None:
        return None

    proc = FileProcessor(settings, publish_event=publish)
    proc.clean_scratch()

    async def twice() -> list[OcrCompleted | OcrFailed]:
        return list(await asyncio.gather(proc.ocr(fa), proc.ocr(fa)))

    try:
        first, second = asyncio.run(twice())
    finally:
        proc.close()
    assert isinstance(first, OcrCompleted) and isinstance(second, OcrCompleted)
    assert len(runs) == 1, runs
    pdf = tmp_path / "ocr" / "xa-a" / "UBND" / "HS-1" / "r1.pdf"
    on_disk = hashlib.sha256(pdf.read_bytes()).hexdigest()
    assert first.output_sha256 == second.output_sha256 == on_disk
    assert first.event_id == second.event_id
    assert not proc._file_locks   # nothing left behind per file
