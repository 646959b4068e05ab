"""OCR job helpers: output paths, completion marker, page sources, text-layer placement (no
recognition)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pikepdf
import pytest

from sohoa.documents import DocumentRejected
from streams.ocr import ENGINE, OcrDone, OcrOptions, OcrPage, OcrPaths, inputs_digest, load_done
from streams.ocr_pdf import text_layer_matrix
from streams.page_source import open_source
from streams.pdf_content import full_page_image, read_page
from tests.support import pages
from tests.support.ocr_helpers import job_pages
from tests.support.pages import PageSpec


def test_paths_are_derived_and_safe(tmp_path: Path) -> None:
    p = OcrPaths.for_file(tmp_path, "xa-a", "UBND", "HS/2024/../001", 2)
    assert p.pdf.parent.parent.parent == tmp_path / "xa-a"
    assert p.pdf.name == "r2.pdf" and ".." not in p.pdf.parts
    q = OcrPaths.for_file(tmp_path, "xa-a", "UBND", "HS_2024_.._001", 2)
    assert p.pdf != q.pdf  # distinct codes stay distinct after cleaning
    assert OcrPaths.for_file(tmp_path, "xa-a", "", "HS-1", 1).pdf.parent.parent.name == "_"


def options(languages: str) -> OcrOptions:
    return OcrOptions(engine=ENGINE, languages=languages, output_type="pdfa-2",
                      rotate_pages=True, osd_below_confidence=60.0, denoise=True)


def test_load_done_needs_same_inputs_and_intact_pdf(tmp_path: Path) -> None:
    paths = OcrPaths.for_file(tmp_path, "s", "f", "HS-1", 1)
    paths.pdf.parent.mkdir(parents=True)
    paths.pdf.write_bytes(b"%PDF-1.7 fake")
    digest = inputs_digest([OcrPage(document="1.tif", page_index=1, uri="file:///1.tif",
                                    document_sha256="a" * 64, sha256="a" * 64)],
                           options("vie"))
    result: dict[str, Any] = {"ok": True, "inputs_digest": digest, "pages": [],
              "output_sha256": hashlib.sha256(b"%PDF-1.7 fake").hexdigest()}
    paths.result.write_text(json.dumps(result))
    assert load_done(paths, digest) == OcrDone(inputs_digest=digest, pages=[],
                                               output_sha256=result["output_sha256"])
    assert load_done(paths, "0" * 64) is None
    paths.pdf.write_bytes(b"%PDF-1.7 half")
    assert load_done(paths, digest) is None


def test_inputs_digest_follows_page_identity_and_language() -> None:
    page = OcrPage(document="QD.tif", page_index=2, uri="file:///QD.tif", sha256="b" * 64,
                   document_sha256="c" * 64, media_type="image/tiff")
    vie = options("vie")
    base = inputs_digest([page], vie)
    assert inputs_digest([replace(page, uri="file:///moved/QD.tif")], vie) == base
    assert inputs_digest([replace(page, languages="vie+eng")], vie) != base
    assert inputs_digest([page], options("vie+eng")) != base
    assert inputs_digest([replace(page, page_index=3)], vie) != base
    assert inputs_digest([replace(page, document="QD2.tif")], vie) != base
    assert inputs_digest([replace(page, document_sha256="d" * 64)], vie) != base


def test_page_sources_count_pages_and_copy_them_untouched(tmp_path: Path) -> None:
    a = pages.write_page(tmp_path / "1.jpg", PageSpec(dpi=200))
    b = pages.multipage_tiff(tmp_path / "2.tif", [PageSpec(text=pages.text_lines(4, k))
                                                  for k in (0, 5)])
    c = pages.scanner_pdf(tmp_path / "3.pdf")
    d = pages.png_with_alpha(tmp_path / "4.png")
    out = pikepdf.new()
    counts = []
    for f in (a, b, c, d):
        refs = job_pages([f])
        src = open_source(f.read_bytes(), refs[0].media_type)
        counts.append(src.page_count)
        for ref in refs:
            src.check(ref.page_index, ref.sha256)
            with src.pix(ref.page_index) as pix:
                assert pix.size == (1654, 2339) and pix.resolution == (200, 200)
            src.append_page(out, ref.page_index)
    assert counts == [1, 2, 1, 1]
    out.save(tmp_path / "out.pdf")
    with pikepdf.open(tmp_path / "out.pdf") as pdf:
        assert len(pdf.pages) == 5
        jpeg = next(iter(pdf.pages[0].get_images().values())).read_raw_bytes()
    assert jpeg == a.read_bytes()
    # A page is proven by its own content digest: page 2's is not page 1's.
    tif = open_source(b.read_bytes(), "image/tiff")
    with pytest.raises(DocumentRejected, match="differs"):
        tif.check(1, job_pages([b])[1].sha256)
    with pytest.raises(DocumentRejected, match="has 2 page"):
        tif.check(3, "0" * 64)
    with pytest.raises(DocumentRejected, match="encrypted"):
        open_source(pages.encrypted_pdf(tmp_path / "e.pdf").read_bytes())
    with pytest.raises(DocumentRejected, match="truncated") as bad:
        open_source(pages.corrupt(tmp_path / "c.tif").read_bytes())
    assert bad.value.reason == "corrupt"
    with pytest.raises(DocumentRejected, match="not the image/png"):
        open_source(a.read_bytes(), "image/png")


def test_a_scanner_pdf_page_loses_its_invisible_text_and_keeps_the_rest(tmp_path: Path) -> None:
    """A scanner's own OCR text (render mode 3) is taken out of the page, in its content or
    in a form it draws; the image, its placement and every state the text set stay."""
    for in_form in (False, True):
        f = pages.scanner_pdf_with_text(tmp_path / f"old-{in_form}.pdf", hidden="OLD LAYER",
                                        in_form=in_form)
        with pikepdf.open(f) as pdf:
            page = pdf.pages[0]
            image_before = next(iter(page.get_images().values())).read_raw_bytes()
            drawn = read_page(page)
            assert drawn.hidden_text and not drawn.seen_text
            found = full_page_image(page, drawn)
            assert found is not None and found[1] == 200
            assert found[0].read_raw_bytes() == image_before
            ops = [str(i.operator) for i in pikepdf.parse_content_stream(page)]
            assert "Tj" not in ops and "BT" not in ops and ops.count("Do") == 1 + in_form
            if in_form:
                form = page.obj.Resources.XObject.OldText
                assert not [i for i in pikepdf.parse_content_stream(form)]
            assert not read_page(page).hidden_text  # nothing left to take out
    # Text that is seen stays where it is: the caller rebuilds such a page.
    both = pages.scanner_pdf_with_text(tmp_path / "both.pdf", hidden="OLD", visible="SO HOA")
    with pikepdf.open(both) as pdf:
        contents = pdf.pages[0].obj.Contents
        before = [c.read_bytes() for c in contents] if isinstance(contents, pikepdf.Array) else [
            contents.read_bytes()]
        drawn = read_page(pdf.pages[0])
        assert drawn.seen_text and drawn.hidden_text
        after = pdf.pages[0].obj.Contents
        assert [c.read_bytes() for c in after] == before


def test_removed_text_leaves_the_state_later_drawing_reads() -> None:
    """A colour set inside a text object outlives it: taking the text out keeps it."""
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(100, 100))
    page = pdf.pages[0]
    page.obj.Contents = pdf.make_stream(
        b"BT 1 0 0 rg /F1 9 Tf 3 Tr 10 10 Td (x) Tj ' ET 0 0 10 10 re f")
    drawn = read_page(page)
    assert drawn.hidden_text and drawn.other_paint and not drawn.seen_text
    ops = [(str(i.operator), list(i.operands)) for i in pikepdf.parse_content_stream(page)]
    assert ops == [("rg", [1, 0, 0]), ("re", [0, 0, 10, 10]), ("f", [])]
    assert full_page_image(page, drawn) is None  # a path is painted: not one scanned image


@pytest.mark.parametrize("turn", [0, 90, 180, 270])
def test_text_layer_lands_on_the_page_for_every_turn(turn: int) -> None:
    """Text found on the image turned ``turn`` degrees clockwise (the upright reading) is
    placed back on the unturned page: the text page's corners land on the page's corners."""
    page = [10.0, 20.0, 610.0, 820.0]            # 600 x 800, not at the origin
    text = (400.0, 300.0) if turn in (90, 270) else (300.0, 400.0)  # the turned image's box
    m = text_layer_matrix(text, page, turn)
    corners = {m.transform((x, y)) for x in (0, text[0]) for y in (0, text[1])}
    assert {(round(x, 6), round(y, 6)) for x, y in corners} == {
        (10.0, 20.0), (610.0, 20.0), (10.0, 820.0), (610.0, 820.0)}
    # The upright reading's top-left corner, on the page as scanned: a page that had to turn
    # 90 degrees clockwise lies with its top to the left, so that corner is bottom-left.
    top_left = {0: (10.0, 820.0), 90: (10.0, 20.0), 180: (610.0, 20.0), 270: (610.0, 820.0)}
    x, y = m.transform((0, text[1]))
    assert (round(x, 6), round(y, 6)) == top_left[turn]


def test_stale_temp_outputs_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import os
    import subprocess

    from streams.app_ocr import clean_stale_temps
    from streams.ocr import temp_name

    dead = subprocess.Popen(["true"])
    dead.wait()
    d = tmp_path / "s" / "f" / "HS-1"
    d.mkdir(parents=True)
    (d / temp_name("r1.pdf", dead.pid)).write_bytes(b"half")
    alive = d / temp_name("r1.pdf", os.getpid())
    alive.write_bytes(b"being written")
    other_host = d / ".r1.pdf.another-host.1.tmp"
    other_host.write_bytes(b"theirs")
    (d / "r1.pdf").write_bytes(b"%PDF final")
    assert clean_stale_temps(tmp_path) == 1
    assert sorted(p.name for p in d.iterdir()) == sorted(
        [alive.name, other_host.name, "r1.pdf"])


def test_smoothing_keeps_the_page_geometry(tmp_path: Path) -> None:
    """The smoothed image is what Tesseract reads: its words must land where the original's
    are, so size and resolution are the original's (also for a bilevel page, left as is)."""
    from PIL import Image

    from streams.tesseract import Pix

    img = Image.new("RGB", (40, 30), (250, 248, 240))
    img.putpixel((20, 15), (0, 0, 0))             # one dark speck on paper
    img.save(tmp_path / "speck.png", dpi=(300, 300))
    with Pix.from_bytes((tmp_path / "speck.png").read_bytes()) as pix, pix.smoothed() as soft:
        assert soft.size == (40, 30) and soft.resolution == (300, 300)
    bilevel = pages.g4_tiff(tmp_path / "g4.tif", PageSpec(dpi=200))
    with Pix.from_bytes(bilevel.read_bytes()) as pix, pix.smoothed() as same:
        assert same.size == pix.size == (1654, 2339) and same.resolution == (200, 200)


def test_a_classified_file_keeps_no_ocr_output_at_the_centre(tmp_path: Path) -> None:
    from sohoa.config import Settings
    from sohoa.events import FileAssembled, PageRef
    from streams.app_ocr import FileProcessor

    settings = Settings(ocr={"output_dir": tmp_path / "ocr"},
                        streams={"data_dir": tmp_path / "faust"})
    fa = FileAssembled(site_id="xa-a", fonds="UBND", file_code="HS-1", revision=2,
                       classification="secret", trigger="reclassified", pages=[PageRef(
                           document="1.png", uri="file:///x/1.png", document_sha256="a" * 64,
                           sha256="a" * 64)])
    r1 = OcrPaths.for_file(tmp_path / "ocr", "xa-a", "UBND", "HS-1", 1)
    r1.pdf.parent.mkdir(parents=True)
    for p in (r1.pdf, r1.text, r1.result):
        p.write_text("what the text layer said")
    proc = FileProcessor(settings, publish_event=None)
    assert proc.ocr_skip_reason(fa, {}) == "classified"
    assert proc.purge_outputs(fa) == 3
    assert list(r1.pdf.parent.iterdir()) == []


def test_a_store_that_fails_the_purge_is_retried_then_a_dead_letter(tmp_path: Path,
                                                                      caplog) -> None:
    """The object store away when a classified file's outputs are purged: the local files
    are gone all the same, each failure is an ERROR, and after ``ocr.retries`` the
    FileAssembled goes to the dead letters saying what is left (done again on the file's next
    reassembly)."""
    import asyncio
    import logging

    from infra.procs import free_port
    from sohoa.config import Settings
    from sohoa.events import FileAssembled, PageRef
    from streams.app_ocr import FileProcessor

    settings = Settings(ocr={"output_dir": tmp_path / "ocr", "retries": 1, "backoff_s": 0.01},
                        streams={"data_dir": tmp_path / "faust"},
                        store={"endpoint": f"http://127.0.0.1:{free_port()}",
                               "access_key_id": "k", "secret_access_key": "s",
                               "connect_timeout_s": 1})
    fa = FileAssembled(site_id="xa-a", fonds="UBND", file_code="HS-1", revision=2,
                       classification="secret", trigger="reclassified", pages=[PageRef(
                           document="1.png", uri="file:///x/1.png", document_sha256="a" * 64,
                           sha256="a" * 64)])
    r1 = OcrPaths.for_file(tmp_path / "ocr", "xa-a", "UBND", "HS-1", 1)
    r1.pdf.parent.mkdir(parents=True)
    for p in (r1.pdf, r1.text, r1.result):
        p.write_text("what the text layer said")
    dead: list[str] = []

    async def dead_letter(_fa: FileAssembled, reason: str) -> None:
        dead.append(reason)

    proc = FileProcessor(settings, publish_event=None)
    with caplog.at_level(logging.ERROR, logger="streams.app_ocr"):
        assert asyncio.run(proc.purge_classified(fa, dead_letter)) is False
    assert list(r1.pdf.parent.iterdir()) == []
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["classified file's OCR outputs not deleted from the object store; "
                      "retrying",
                      "classified file's OCR outputs not deleted from the object store"]
    assert len(dead) == 1 and "OCR outputs still in the object store (sohoa-outputs)" in dead[0]
    assert "unreachable" in dead[0]
