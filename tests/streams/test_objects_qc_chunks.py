"""Issue 21 on the real object store: QC checks a long document in chunks, and the document
comes over the network once for all of them, not once per chunk. The downloads are counted
by the object-store client of every process that reads (the OCR worker's and the QC pool's:
the count is a file each GET appends a line to); the store itself is the real SeaweedFS."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import IO, Any

import pytest

from sohoa.config import Settings
from sohoa.objectstore import ObjectStore, page_key, page_uri
from streams.app_ocr import FileProcessor
from streams.assembly import FileState
from streams.qc_task import check_chunk
from streams.sources import PageSources
from streams.staged_documents import open_staged
from tests.support.pages import PageSpec, multipage_tiff, text_lines
from tests.support.streams_helpers import closed, document_events

PAGES = "sohoa-pages"
SITE = "xa-obj"
N_PAGES, PER_TASK = 6, 2


class CountingStore(ObjectStore):
    """The real client; each GET of an object appends its key to ``log``."""

    log = ""

    def get_into(self, bucket: str, key: str, out: IO[bytes], max_bytes: int,
                 version_id: str | None = None) -> tuple[str, int]:
        with open(self.log, "a") as fh:
            fh.write(f"{os.getpid()} {key}\n")
        return super().get_into(bucket, key, out, max_bytes, version_id)


class CountingSources(PageSources):
    """The workers' read policy with the counting client (picklable: the QC pool gets it)."""

    log = ""

    def _client(self) -> Any:
        if self._store is None:
            CountingStore.log = self.log
            self._store = CountingStore(self.store_cfg)
        return self._store


def _stored_document(objects, tmp_path: Path):
    file_code = f"HS-DAI-{os.urandom(3).hex()}"
    specs = [PageSpec(size_mm=(148.0, 210.0), text=text_lines(4, i), dpi=300, noise=0.001,
                      seed=int.from_bytes(os.urandom(4), "big")) for i in range(N_PAGES)]
    path = multipage_tiff(tmp_path / "HS-dai.tif", specs)
    events = document_events(SITE, file_code, path)
    assert len(events) == N_PAGES
    sha = events[0].document_sha256
    data = path.read_bytes()
    ObjectStore(objects.store(f"site:{SITE}"), retries=0).put(
        PAGES, page_key(SITE, sha), data, sha)
    state = FileState(SITE, file_code)
    for ev in events:
        state.apply(ev.model_copy(update={"uri": page_uri(PAGES, SITE, sha)}), 1000.0)
    _changed, fa = state.apply(closed(SITE, file_code), 1000.0)
    assert fa is not None and len(fa.pages) == N_PAGES
    return fa, sha


def test_a_document_checked_in_chunks_is_downloaded_once(objects, tmp_path: Path) -> None:
    fa, sha = _stored_document(objects, tmp_path)
    settings = Settings(store=objects.store("workers"),
                        ocr={"output_dir": tmp_path / "ocr"},
                        streams={"data_dir": tmp_path / "faust"},
                        qc={"workers": 2, "pages_per_task": PER_TASK})
    proc = FileProcessor(settings, publish_event=lambda ev: asyncio.sleep(0))
    log = tmp_path / "gets.log"
    log.touch()
    sources = CountingSources.from_settings(settings)
    sources.log = str(log)
    proc.sources = proc.staged.sources = sources
    try:
        checks = asyncio.run(proc.check_pages(fa))
    finally:
        proc.close()
    # Every page checked and passed, read from the one download.
    assert sorted(checks) == [(fa.pages[0].document, i) for i in range(1, N_PAGES + 1)]
    failed = {p: [c for c in cs if not c.passed] for p, cs in checks.items()}
    assert not any(failed.values()), failed
    gets = log.read_text().splitlines()
    assert N_PAGES // PER_TASK == 3  # three chunks: three downloads before
    assert [g.split()[1] for g in gets] == [page_key(SITE, sha)], f"{len(gets)} GETs"
    # Nothing of the document is left on disk once its chunks are done.
    staged = proc.work_root / "qc-staged"
    assert not staged.exists() or list(staged.iterdir()) == []


def test_a_staged_copy_is_never_served_for_another_document(objects, tmp_path: Path) -> None:
    fa, sha = _stored_document(objects, tmp_path)
    settings = Settings(store=objects.store("workers"))
    sources = PageSources.from_settings(settings)
    home = tmp_path / "staged"
    home.mkdir()
    path = sources.stage_object(SITE, fa.pages[0].uri, str(home))
    assert Path(path).name == sha and Path(path).stat().st_mode & 0o777 == 0o600
    # Named for its SHA-256 only after the proof: the partial name is gone.
    assert [p.name for p in Path(path).parent.iterdir()] == [sha]
    other = page_uri(PAGES, SITE, "c" * 64)
    res = check_chunk(SITE, other, "image/tiff", [(1, fa.pages[0].sha256)], settings.qc,
                      sources, staged=path)
    assert [c.value for c in res[0].checks] == ["refused: not a page this site may send"]
    vf = open_staged(sources, SITE, fa.pages[0].uri, path)
    with vf.file:
        assert vf.size == Path(path).stat().st_size
    # A staged copy deleted meanwhile: the chunk reads the store instead.
    os.unlink(path)
    res = check_chunk(SITE, fa.pages[0].uri, "image/tiff", [(1, fa.pages[0].sha256)],
                      settings.qc, sources, staged=path)
    assert res[0].passed, res[0].checks


def _tampered_count() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("sohoa_page_objects_tampered_total", {"site": SITE}) or 0.0


@pytest.mark.parametrize("per_task", [PER_TASK, 100],
                         ids=["staged-by-the-worker", "read-by-the-pool"])
def test_a_tampered_page_object_is_counted_for_the_alert(objects, tmp_path: Path,
                                                         per_task: int) -> None:
    """Other bytes PUT over a page object (a stolen site key): QC still reads the stored
    version, and the worker's metric counts the read, whether the worker staged the document
    for its chunks or a pool process read it (the pool exports no metrics of its own)."""
    import io

    fa, sha = _stored_document(objects, tmp_path)
    key = page_key(SITE, sha)
    ObjectStore(objects.store(f"site:{SITE}"), retries=0)._call(
        "put_object", Bucket=PAGES, Key=key, Body=b"not the scan", Metadata={"sha256": sha})
    latest = io.BytesIO()  # the fault is real: a plain GET gives the other bytes
    assert ObjectStore(objects.store("admin"), retries=0).get_into(
        PAGES, key, latest, 10**6)[0] != sha
    settings = Settings(store=objects.store("workers"),
                        ocr={"output_dir": tmp_path / "ocr"},
                        streams={"data_dir": tmp_path / "faust"},
                        qc={"workers": 2, "pages_per_task": per_task})
    proc = FileProcessor(settings, publish_event=lambda ev: asyncio.sleep(0))
    before = _tampered_count()
    try:
        checks = asyncio.run(proc.check_pages(fa))
    finally:
        proc.close()
    assert len(checks) == N_PAGES and all(c.passed for cs in checks.values() for c in cs)
    # One read of the document (staged once, or one chunk in the pool): counted once.
    assert _tampered_count() - before == 1
