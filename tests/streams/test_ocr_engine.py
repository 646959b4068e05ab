"""The OCR engine with real parts: libtesseract in long-lived engine processes
(streams/ocr_pool.py), real scanner formats, every output judged by veraPDF; no Kafka."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pikepdf
import pytest
from PIL import Image

from streams.ocr import ENGINE, OcrJob, OcrOptions, OcrPage, OcrPaths, inputs_digest
from streams.ocr_pool import EnginePool
from streams.sources import PageSources
from tests.support import pages
from tests.support.ocr_helpers import assert_pdfa, cer, image_streams, job_pages, text_layer
from tests.support.pages import PageSpec

pytestmark = pytest.mark.ocr


@pytest.fixture(scope="module")
def pool() -> Any:
    p = EnginePool(1)
    yield p
    p.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_job(tmp_path: Path, page_list: list[OcrPage], code: str = "HS-1",
             **options: Any) -> OcrJob:
    """The job the OCR app sends an engine; the site's pages are under ``tmp_path``."""
    paths = OcrPaths.for_file(tmp_path / "ocr", "xa-a", "UBND", code, 1)
    opts = OcrOptions(**{"engine": ENGINE, "languages": "vie", "output_type": "pdfa-2",
                         "rotate_pages": True, "osd_below_confidence": 60.0, "denoise": True,
                         **options})
    sources = PageSources({"xa-a": [str(tmp_path)]}, [], 1 << 30, 60.0)
    return OcrJob(pages=page_list, options=opts, inputs_digest=inputs_digest(page_list, opts),
                  site_id="xa-a", sources=sources,
                  title=f"UBND/{code} (r1)", pdf=str(paths.pdf), text=str(paths.text),
                  result=str(paths.result), work_dir=str(tmp_path / "work" / code))


def test_scanner_formats_become_one_pdfa_with_their_images_kept(pool, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    texts = [pages.text_lines(6, k) for k in range(0, 18, 2)]
    files = [
        pages.write_page(d / "001.jpg", PageSpec(text=texts[0], seed=1), quality=90),
        pages.write_page(d / "002.png", PageSpec(dpi=300, text=texts[1], seed=2)),
        pages.cmyk_jpeg(d / "003.jpg", PageSpec(text=texts[2])),
        pages.png_with_alpha(d / "004.png", PageSpec(text=texts[3])),
        pages.palette_png(d / "005.png", PageSpec(text=texts[4])),
        pages.multipage_tiff(d / "006.tif", [PageSpec(text=texts[5]), PageSpec(text=texts[6])]),
        pages.scanner_pdf(d / "007.pdf", PageSpec(text=texts[7])),
        pages.g4_tiff(d / "008.tif", PageSpec(dpi=300, text=texts[8])),
    ]
    expected = [texts[0], texts[1], texts[2], texts[3], texts[4], texts[5], texts[6], texts[7],
                texts[8]]
    job = make_job(tmp_path, job_pages(files))
    progress: list[tuple[int, int]] = []
    result = pool.run(job, 600, lambda done, total: progress.append((done, total)))
    assert result.ok, result
    assert [(p.document, p.page_index) for p in result.pages] == [
        ("001.jpg", 1), ("002.png", 1), ("003.jpg", 1), ("004.png", 1), ("005.png", 1),
        ("006.tif", 1), ("006.tif", 2), ("007.pdf", 1), ("008.tif", 1)]
    assert progress[-1] == (9, 9) and [d for d, _ in progress] == list(range(1, 10))
    pdf, txt, res = Path(job.pdf), Path(job.text), Path(job.result)
    assert_pdfa([pdf])
    # Archive text is not for every local user: no output is world-readable.
    for f in (pdf, txt, res):
        assert f.stat().st_mode & 0o777 == 0o640, (f, oct(f.stat().st_mode))
    assert json.loads(res.read_text())["output_sha256"] == _sha(pdf)
    # The original image, untouched: a JPEG's bytes (and a scanner PDF's JPEG) pass through.
    raw = image_streams(pdf)
    assert raw[0] == files[0].read_bytes()
    assert raw[2] == files[2].read_bytes()
    with pikepdf.open(files[6]) as src:
        assert raw[7] == next(iter(src.pages[0].get_images().values())).read_raw_bytes()
    rates = [cer("\n".join(t), text_layer(pdf, i + 1)) for i, t in enumerate(expected)]
    assert max(rates) < 0.02, rates
    sidecar = txt.read_text(encoding="utf-8").split("\f")
    assert len(sidecar) == 9 and cer("\n".join(expected[1]), sidecar[1]) < 0.02


def test_page_identity_pages_pick_their_pages_of_a_document(pool, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    texts = [pages.text_lines(5, k) for k in (1, 4, 7)]
    tif = pages.multipage_tiff(d / "QD-15.tif", [PageSpec(text=t) for t in texts])
    jpg = pages.write_page(d / "003.jpg", PageSpec(text=pages.text_lines(5, 9)))

    refs = {(r.document, r.page_index): r for r in job_pages([tif, jpg])}

    def entry(path: Path, index: int, **over: Any) -> OcrPage:
        return replace(refs.get((path.name, index), refs[(path.name, 1)]), page_index=index,
                       **over)

    page_list = [entry(tif, 1), entry(tif, 3), entry(jpg, 1)]
    job = make_job(tmp_path, page_list)
    result = pool.run(job, 600)
    assert result.ok, result
    assert [(p.document, p.page_index) for p in result.pages] == [
        ("QD-15.tif", 1), ("QD-15.tif", 3), ("003.jpg", 1)]
    pdf = Path(job.pdf)
    assert_pdfa([pdf])
    assert cer("\n".join(texts[2]), text_layer(pdf, 2)) < 0.02
    # A page the document does not have, and a document changed since it was hashed.
    bad = pool.run(make_job(tmp_path, [entry(tif, 4)], code="HS-2"), 600)
    assert bad.kind == "input" and "QD-15.tif page 4" in bad.reason, bad
    changed = pool.run(make_job(tmp_path, [entry(tif, 1, document_sha256="0" * 64)],
                                code="HS-3"), 600)
    assert changed.kind == "input" and "sha256 mismatch" in changed.reason, changed
    # Each page is proven by its own digest: page 2's content is not what page 1 claims.
    other = pool.run(make_job(tmp_path, [entry(tif, 1, sha256=refs[("QD-15.tif", 2)].sha256)],
                              code="HS-4"), 600)
    assert other.kind == "input" and "QD-15.tif page 1: changed" in other.reason, other
    # Only where the site's pages are: a document outside its roots is refused unread.
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jpg"
    outside.write_bytes(jpg.read_bytes())
    try:
        far = pool.run(make_job(tmp_path, [replace(entry(jpg, 1), uri=outside.as_uri())],
                                code="HS-5"), 600)
    finally:
        outside.unlink()
    assert far.kind == "input" and "refused" in far.reason, far


def test_languages_come_from_the_document_else_the_default(pool, tmp_path: Path) -> None:
    page = pages.write_page(tmp_path / "001.png", PageSpec(text=pages.text_lines(6, 0)))
    (tmp_path / "002.png").write_bytes(page.read_bytes())
    refs = job_pages([page, tmp_path / "002.png"], languages={"002.png": "eng"})
    job = make_job(tmp_path, refs)
    res = pool.run(job, 600)
    assert res.ok, res
    vie, eng = Path(job.text).read_text("utf-8").split("\f")
    # Only the Vietnamese model writes Vietnamese letters.
    assert "Độc lập" in vie and "Độc lập" not in eng, eng[:200]
    unknown = pool.run(make_job(tmp_path, [replace(refs[0], languages="xyz")], code="HS-X"), 600)
    assert unknown.kind == "input" and "xyz" in unknown.reason, unknown
    # A language is a name in Tesseract's data folder, never a path out of it.
    path = pool.run(make_job(tmp_path, [replace(refs[0], languages="../../tmp/vie")],
                             code="HS-P"), 600)
    assert path.kind == "input" and "not a Tesseract language set" in path.reason, path


def test_pages_scanned_upside_down_or_sideways_are_shown_upright(pool, tmp_path: Path) -> None:
    texts = [pages.text_lines(8, k) for k in (2, 5, 8, 11)]
    # PIL turns counter-clockwise. Tesseract reads a page lying on its right side well even
    # sideways (orientation detection runs because its lines are tall), on its left side
    # poorly; both are read again turned upright, and shown upright (/Rotate).
    turned = {"180.png": 180, "090.png": -90, "270.png": 90, "000.png": 0}
    files = []
    for (name, angle), t in zip(turned.items(), texts, strict=True):
        img = pages.render_page(PageSpec(text=t)).rotate(angle, expand=True)
        img.save(tmp_path / name, dpi=(200, 200))
        files.append(tmp_path / name)
    job = make_job(tmp_path, job_pages(files))
    res = pool.run(job, 600)
    assert res.ok, res
    pdf = Path(job.pdf)
    with pikepdf.open(pdf) as doc:
        rotate = [int(p.obj.get("/Rotate", 0)) for p in doc.pages]
    assert rotate == [180, 270, 90, 0]
    assert [p.turned for p in res.pages] == [180, 270, 90, 0]
    assert_pdfa([pdf])
    rates = [cer("\n".join(t), text_layer(pdf, i + 1)) for i, t in enumerate(texts)]
    assert max(rates) < 0.03, rates
    # With rotation off, the upside-down page keeps its poor reading and its orientation.
    off = make_job(tmp_path, job_pages(files[:1]), code="HS-OFF", rotate_pages=False)
    res = pool.run(off, 600)
    assert res.pages[0].turned == 0 and res.pages[0].mean_confidence < 60


def test_timeout_kills_the_engine_and_the_next_job_gets_a_fresh_one(tmp_path: Path) -> None:
    page = pages.write_page(tmp_path / "001.png", PageSpec(dpi=300, text=pages.text_lines(12)))
    small = EnginePool(1)
    try:
        first = small._take()
        small._give_back(first)
        job = make_job(tmp_path, job_pages([page]) * 4)
        res = small.run(job, 0.5)
        assert not res.ok and res.kind == "timeout", res
        assert not first.alive()
        assert not Path(job.pdf).exists() and not list(Path(job.pdf).parent.glob(".*"))
        assert not Path(job.work_dir).exists()
        again = small.run(make_job(tmp_path, job_pages([page]), code="HS-2"), 600)
        assert again.ok, again
    finally:
        small.close()


def test_engine_exits_when_the_worker_that_started_it_is_killed(tmp_path: Path) -> None:
    """A worker killed -9 must not leave an engine behind to finish a file that the restarted
    worker is OCR-ing again (two writers of one output)."""
    script = (
        "import sys, time\n"
        "from streams.ocr_pool import EnginePool\n"
        "if __name__ == '__main__':\n"
        "    eng = EnginePool(1)._take()\n"
        "    print(eng.proc.pid, flush=True)\n"
        "    time.sleep(600)\n")
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[2])
    try:
        assert worker.stdout is not None
        engine_pid = int(worker.stdout.readline())
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(engine_pid):
            time.sleep(0.2)
        assert not _alive(engine_pid), "engine outlived its worker"
    finally:
        worker.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for init to reap it is gone for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_image_page_sizes_follow_their_resolution(pool, tmp_path: Path) -> None:
    """A 300-dpi and a 150-dpi scan of A4 are both A4 in the PDF (the text layer follows)."""
    a = pages.write_page(tmp_path / "a.png", PageSpec(dpi=300, text=pages.text_lines(4)))
    b = tmp_path / "b.png"
    pages.render_page(PageSpec(dpi=150, text=pages.text_lines(4, 3))).save(b, dpi=(150, 150))
    job = make_job(tmp_path, job_pages([a, b]))
    assert pool.run(job, 600).ok
    with pikepdf.open(job.pdf) as doc:
        for page in doc.pages:
            w, h = (float(v) for v in page.mediabox[2:])
            assert abs(w - 595.3) < 2 and abs(h - 841.9) < 2, (w, h)
    assert Image.open(a).size == (2480, 3508)


def test_progress_of_a_file_in_ocr_goes_to_metrics_and_events(tmp_path: Path) -> None:
    """While a file is OCR'd, its pages done of pages are in the OCR worker's metrics and, at
    most every ocr.progress_every_s, in OcrProgress events; the series goes when it is done."""
    import asyncio

    from prometheus_client import REGISTRY

    from sohoa.config import Settings
    from sohoa.events import FileAssembled, OcrCompleted, OcrProgress, PageRef
    from streams.app_ocr import FileProcessor

    files = [pages.write_page(tmp_path / "in" / f"{n:03d}.png",
                              PageSpec(seed=n, text=pages.text_lines(10, n))) for n in range(1, 7)]
    fa = FileAssembled(site_id="xa-a", fonds="UBND", file_code="HS-PROG", pages=[
        PageRef(**{k: v for k, v in asdict(ref).items() if k != "languages"}, number=n)
        for n, ref in enumerate(job_pages(files), 1)])
    settings = Settings(ocr={"output_dir": tmp_path / "ocr", "concurrency": 1,
                             "progress_every_s": 0.3},
                        streams={"data_dir": tmp_path / "faust"},
                        sources={"sites": {"xa-a": {"roots": [tmp_path / "in"]}}})
    labels = {"site": "xa-a", "fonds": "UBND", "file": "HS-PROG"}
    seen: list[tuple[int, int, float | None]] = []

    async def publish(ev) -> None:
        if isinstance(ev, OcrProgress):
            gauge = REGISTRY.get_sample_value("sohoa_ocr_file_pages_done", labels)
            seen.append((ev.pages_done, ev.pages_total, gauge))

    proc = FileProcessor(settings, publish)
    proc.clean_scratch()
    try:
        done = asyncio.run(proc.ocr(fa))
    finally:
        proc.close()
    assert isinstance(done, OcrCompleted), done
    assert seen, "no OcrProgress while six pages were OCR'd"
    assert all(t == 6 and 1 <= d <= 6 and g is not None and g >= d for d, t, g in seen), seen
    assert [d for d, _, _ in seen] == sorted({d for d, _, _ in seen})  # no repeats, rising
    assert REGISTRY.get_sample_value("sohoa_ocr_file_pages_done", labels) is None


def test_plain_pdf_output_when_pdfa_is_not_asked_for(pool, tmp_path: Path) -> None:
    text = pages.text_lines(5, 2)
    page = pages.write_page(tmp_path / "001.jpg", PageSpec(text=text))
    job = make_job(tmp_path, job_pages([page]), output_type="pdf")
    assert pool.run(job, 600).ok
    with pikepdf.open(job.pdf) as doc:
        assert not doc.open_metadata().pdfa_status
        assert "/OutputIntents" not in doc.Root
    assert cer("\n".join(text), text_layer(Path(job.pdf), 1)) < 0.02


def test_text_already_on_a_pdf_page_gives_way_to_ours(pool, tmp_path: Path) -> None:
    """A scanner's own OCR layer (invisible text, in the page or in a form it draws) is taken
    out, the image kept as it was; a page showing text of its own is rebuilt from its
    rendering; a PDF that already went through OCR (ours) comes out with its text once."""
    d = tmp_path / "in"
    d.mkdir()
    texts = [pages.text_lines(6, k) for k in (1, 4, 7)]
    old = "QWERTY scanner layer"
    files = [
        pages.scanner_pdf_with_text(d / "001.pdf", PageSpec(text=texts[0]), hidden=old),
        pages.scanner_pdf_with_text(d / "002.pdf", PageSpec(text=texts[1]), hidden=old,
                                    in_form=True),
        pages.scanner_pdf_with_text(d / "003.pdf", PageSpec(text=texts[2]), hidden=old,
                                    visible="SOHOA 2024"),
    ]
    job = make_job(tmp_path, job_pages(files))
    res = pool.run(job, 600)
    assert res.ok, res
    pdf = Path(job.pdf)
    assert_pdfa([pdf])
    layers = [text_layer(pdf, i) for i in (1, 2, 3)]
    assert all("QWERTY" not in t for t in layers), layers
    assert max(cer("\n".join(t), layer) for t, layer in zip(texts[:2], layers, strict=False)
               ) < 0.02, layers
    # The page that showed text is now its rendering: that text is read once, by us.
    assert " ".join(layers[2].split()).count("SOHOA 2024") == 1, layers[2]
    assert cer("\n".join(texts[2]), layers[2].replace("SOHOA 2024", "")) < 0.03, layers[2]
    with pikepdf.open(pdf) as out, pikepdf.open(files[0]) as src:
        kept = next(iter(out.pages[0].get_images().values())).read_raw_bytes()
        assert kept == next(iter(src.pages[0].get_images().values())).read_raw_bytes()
        fonts = [f.get("/BaseFont") for p in out.pages for f in _fonts(p.obj)]
        assert "/Helvetica" not in fonts, fonts
    # Our own output, OCR'd again: one text layer, not two.
    again_in = d / "004.pdf"
    again_in.write_bytes(pdf.read_bytes())
    again = make_job(tmp_path, job_pages([again_in])[:1], code="HS-AGAIN")
    res = pool.run(again, 600)
    assert res.ok, res
    assert cer("\n".join(texts[0]), text_layer(Path(again.pdf), 1)) < 0.02
    assert_pdfa([Path(again.pdf)])


def _fonts(obj: Any, depth: int = 0) -> list[Any]:
    """Every font a page (or form) names in its resources, through its forms."""
    res = obj.get("/Resources") or {}
    found = list((res.get("/Font") or {}).values())
    for x in (res.get("/XObject") or {}).values():
        if depth < 8 and x.get("/Subtype") == "/Form":
            found += _fonts(x, depth + 1)
    return found


def test_a_version_1_file_is_ocred_as_its_version_2(pool, tmp_path: Path) -> None:
    """A version-1 FileAssembled still in the topic (a page was one image file, named by its
    number, hashed whole, media type unsaid) is OCR'd from its upgrade: the whole file's hash
    proves its one page, and the document's type is sniffed."""
    from sohoa.config import Settings
    from sohoa.events import FileAssembled, parse_event
    from streams.app_ocr import FileProcessor

    text = pages.text_lines(6, 3)
    tif = pages.write_page(tmp_path / "001.tif", PageSpec(text=text))
    fa = parse_event(json.dumps({
        "schema": {"name": "FileAssembled", "version": 1}, "event_id": "v1-assembled",
        "site_id": "xa-a", "fonds": "UBND", "file_code": "HS-V1",
        "pages": [{"page_no": 1, "uri": tif.as_uri(), "sha256": _sha(tif)}]}).encode())
    assert isinstance(fa, FileAssembled) and fa.pages[0].media_type == "application/octet-stream"
    settings = Settings(ocr={"output_dir": tmp_path / "ocr"}, streams={"data_dir": tmp_path / "f"},
                        sources={"sites": {"xa-a": {"roots": [tmp_path]}}})
    job, paths, _ = FileProcessor(settings, publish_event=None).job_for(fa)
    res = pool.run(job, 600)
    assert res.ok, res
    assert [(p.document, p.page_index) for p in res.pages] == [("001.tif", 1)]
    assert cer("\n".join(text), text_layer(paths.pdf, 1)) < 0.02
