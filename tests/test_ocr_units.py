"""OCR job helpers: output paths, completion marker, input PDF (no Tesseract)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pikepdf
import pytest

from streams.ocr import OcrInputError, OcrPaths, build_input_pdf, inputs_digest, load_done
from streams.sources import PageSources
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
    digest = inputs_digest([{"document": "1.tif", "page_index": 1, "sha256": "a" * 64}],
                           {"languages": "vie"})
    result = {"ok": True, "inputs_digest": digest, "pages": [],
              "output_sha256": hashlib.sha256(b"%PDF-1.7 fake").hexdigest()}
    paths.result.write_text(json.dumps(result))
    assert load_done(paths, digest) == result
    assert load_done(paths, "0" * 64) is None
    paths.pdf.write_bytes(b"%PDF-1.7 half")
    assert load_done(paths, digest) is None


def test_input_pdf_keeps_order_and_verifies_hashes(tmp_path: Path) -> None:
    a = pages.write_page(tmp_path / "1.png", PageSpec(dpi=200))
    b = pages.multipage_tiff(tmp_path / "2.tif", [PageSpec(), PageSpec(seed=1)])
    c = pages.scanner_pdf(tmp_path / "3.pdf")
    d = pages.png_with_alpha(tmp_path / "4.png")
    refs = []
    for f, n in ((a, 1), (b, 2), (c, 1), (d, 1)):
        sha = hashlib.sha256(f.read_bytes()).hexdigest()
        refs += [{"document": f.name, "page_index": i, "uri": f.as_uri(),
                  "document_sha256": sha, "sha256": sha} for i in range(1, n + 1)]
    src = PageSources({"xa-a": [str(tmp_path)]}, [], 1 << 30, 30.0)
    keys = build_input_pdf(refs, tmp_path / "in.pdf", "xa-a", src)
    assert keys == [("1.png", 1), ("2.tif", 1), ("2.tif", 2), ("3.pdf", 1), ("4.png", 1)]
    with pikepdf.open(tmp_path / "in.pdf") as pdf:
        assert len(pdf.pages) == 5
    refs[0]["document_sha256"] = "0" * 64
    with pytest.raises(OcrInputError, match="sha256 mismatch"):
        build_input_pdf(refs, tmp_path / "in2.pdf", "xa-a", src)


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
