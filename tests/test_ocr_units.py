"""OCR job helpers: output paths, completion marker, page sources, text-layer placement (no
recognition)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pikepdf
import pytest

from streams.ocr import OcrPaths, inputs_digest, load_done
from streams.ocr_pdf import text_layer_matrix
from streams.page_source import SourceError, open_source
from tests import pages
from tests.pages import PageSpec


def test_paths_are_derived_and_safe(tmp_path: Path) -> None:
    p = OcrPaths.for_file(tmp_path, "xa-a", "UBND", "HS/2024/../001", 2)
    assert p.pdf.parent.parent.parent == tmp_path / "xa-a"
    assert p.pdf.name == "r2.pdf" and ".." not in p.pdf.parts
    q = OcrPaths.for_file(tmp_path, "xa-a", "UBND", "HS_2024_.._001", 2)
    assert p.pdf != q.pdf  # distinct codes stay distinct after cleaning
    assert OcrPaths.for_file(tmp_path, "xa-a", "", "HS-1", 1).pdf.parent.parent.name == "_"


def test_load_done_needs_same_inputs_and_intact_pdf(tmp_path: Path) -> None:
    paths = OcrPaths.for_file(tmp_path, "s", "f", "HS-1", 1)
    paths.pdf.parent.mkdir(parents=True)
    paths.pdf.write_bytes(b"%PDF-1.7 fake")
    digest = inputs_digest([{"page_no": 1, "sha256": "a" * 64}], {"languages": "vie"})
    result = {"ok": True, "inputs_digest": digest, "pages": [],
              "output_sha256": hashlib.sha256(b"%PDF-1.7 fake").hexdigest()}
    paths.result.write_text(json.dumps(result))
    assert load_done(paths, digest) == result
    assert load_done(paths, "0" * 64) is None
    paths.pdf.write_bytes(b"%PDF-1.7 half")
    assert load_done(paths, digest) is None


def test_inputs_digest_follows_page_identity_and_language() -> None:
    page = {"page_no": 1, "uri": "file:///a.png", "sha256": "a" * 64}
    base = inputs_digest([page], {"languages": "vie"})
    assert inputs_digest([{**page, "uri": "file:///moved.png"}], {"languages": "vie"}) == base
    assert inputs_digest([{**page, "languages": "vie+eng"}], {"languages": "vie"}) != base
    assert inputs_digest([page], {"languages": "vie+eng"}) != base
    doc = {"document": "QD.tif", "page_index": 2, "uri": "file:///QD.tif", "sha256": "b" * 64,
           "document_sha256": "c" * 64}
    assert inputs_digest([doc], {}) != inputs_digest([{**doc, "page_index": 3}], {})


def test_page_sources_count_pages_and_copy_them_untouched(tmp_path: Path) -> None:
    a = pages.write_page(tmp_path / "1.jpg", PageSpec(dpi=200))
    b = pages.multipage_tiff(tmp_path / "2.tif", [PageSpec(), PageSpec(seed=1)])
    c = pages.scanner_pdf(tmp_path / "3.pdf")
    d = pages.png_with_alpha(tmp_path / "4.png")
    out = pikepdf.new()
    counts = []
    for f in (a, b, c, d):
        src = open_source(f.read_bytes())
        counts.append(src.page_count)
        for i in range(src.page_count):
            with src.pix(i) as pix:
                assert pix.size == (1654, 2339) and pix.resolution == (200, 200)
            src.append_page(out, i)
    assert counts == [1, 2, 1, 1]
    out.save(tmp_path / "out.pdf")
    with pikepdf.open(tmp_path / "out.pdf") as pdf:
        assert len(pdf.pages) == 5
        jpeg = next(iter(pdf.pages[0].get_images().values())).read_raw_bytes()
    assert jpeg == a.read_bytes()
    with pytest.raises(SourceError, match="encrypted"):
        open_source(pages.encrypted_pdf(tmp_path / "e.pdf").read_bytes())
    with pytest.raises(SourceError, match="undecodable"):
        open_source(pages.corrupt(tmp_path / "c.tif").read_bytes())


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
