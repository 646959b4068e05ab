"""Issue 21 on the real object store: QC while the store is down judges no page. The page is
fine, the store is not: the worker waits, reads again once the store is back, and the page
passes; before, every page of the file came out "unreadable" and the file went back for a
rescan it did not need."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sohoa.config import Settings
from sohoa.objectstore import ObjectStore, StoreError, page_key
from streams.app_ocr import FileProcessor
from streams.qc_task import check_chunk
from streams.sources import PageSources, SourceUnavailable
from tests.support.pages import PageSpec, text_lines, write_page
from tests.support.streams_helpers import assembled_from_store

PAGES = "sohoa-pages"
SITE = "xa-obj"
DOWN_S = 6.0


def _stored_file(objects, tmp_path: Path):
    file_code = f"HS-NGAT-{os.urandom(3).hex()}"
    page = write_page(tmp_path / "001.png",
                      PageSpec(size_mm=(210.0, 297.0), text=text_lines(6, 3), dpi=300, noise=0.001,
                               seed=int.from_bytes(os.urandom(4), "big")))
    data = page.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    ObjectStore(objects.store(f"site:{SITE}"), retries=0).put(PAGES, page_key(SITE, sha),
                                                              data, sha)
    _state, fa = assembled_from_store(SITE, file_code, sha, len(data), PAGES)
    assert fa is not None
    return fa, sha


def _store_down(objects) -> None:
    objects.stop()
    with pytest.raises(StoreError) as e:  # the fault is real: nobody answers
        ObjectStore(objects.store("admin"), retries=0).head(PAGES, "x")
    assert e.value.transient


def test_a_chunk_read_while_the_store_is_down_is_not_judged(objects, tmp_path: Path) -> None:
    fa, _sha = _stored_file(objects, tmp_path)
    settings = Settings(store=objects.store("workers"))
    sources = PageSources.from_settings(settings)
    _store_down(objects)
    try:
        with pytest.raises(SourceUnavailable):
            check_chunk(SITE, fa.pages[0].uri, "image/png", [(1, fa.pages[0].sha256)],
                        settings.qc, sources)
    finally:
        objects.start()


def test_qc_waits_for_the_store_and_then_passes_the_page(objects, tmp_path: Path,
                                                         caplog) -> None:
    fa, _sha = _stored_file(objects, tmp_path)
    settings = Settings(store=objects.store("workers"),
                        ocr={"output_dir": tmp_path / "ocr"},
                        streams={"data_dir": tmp_path / "faust"}, qc={"workers": 1})
    published: list[Any] = []

    async def publish(ev: Any) -> None:
        published.append(ev)

    proc = FileProcessor(settings, publish_event=publish)
    _store_down(objects)
    back = threading.Timer(DOWN_S, objects.start)
    started = time.monotonic()
    back.start()
    try:
        with caplog.at_level(logging.WARNING, logger="streams.app_ocr"):
            checks = asyncio.run(proc.check_pages(fa))
    finally:
        back.join()
        proc.close()
    waited = [r for r in caplog.records if "QC waits" in r.getMessage()]
    assert waited, "QC never met the store down"
    assert time.monotonic() - started >= DOWN_S
    [(page, page_checks)] = checks.items()
    assert page == ("001.png", 1)
    failed = [c for c in page_checks if not c.passed]
    assert failed == [], failed
    assert [e.passed for e in published] == [True]
