"""Page quality checks on pages as scanners make them, and on broken ones (real files)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import ImageFilter

from sohoa.config import QcConfig
from streams.qc import FirstPageQc, check_page
from streams.sources import PageSources
from tests.support import pages
from tests.support.pages import PageSpec

CFG = QcConfig()


SITE = "xa-qc"


def sources(root: Path) -> PageSources:
    return PageSources({SITE: [str(root)]}, [], 1 << 30, 30.0)


def run(path: Path, sha: str | None = None) -> FirstPageQc:
    sha = sha or hashlib.sha256(path.read_bytes()).hexdigest()
    return check_page(path.resolve().as_uri(), sha, CFG, SITE, sources(path.resolve().parent))


def failed(res: FirstPageQc) -> set[str]:
    return {c.check for c in res.checks if not c.passed}


def value(res: FirstPageQc, check: str):
    return next(c.value for c in res.checks if c.check == check)


@pytest.mark.parametrize("make", [
    lambda p: pages.write_page(p / "a.png", PageSpec(skew_deg=1.0, noise=0.003)),
    lambda p: pages.write_page(p / "a.tif", PageSpec(dpi=300)),           # TIFF LZW
    lambda p: pages.write_page(p / "a.jpg", PageSpec()),
    lambda p: pages.cmyk_jpeg(p / "a.jpg"),
    lambda p: pages.png_with_alpha(p / "a.png"),
    lambda p: pages.palette_png(p / "a.png"),
    lambda p: pages.multipage_tiff(p / "a.tif", [PageSpec(), PageSpec(seed=1)]),
    lambda p: pages.scanner_pdf(p / "a.pdf"),
], ids=["png", "tiff-lzw-300", "jpeg", "jpeg-cmyk", "png-alpha", "png-palette",
        "tiff-multipage", "scanner-pdf"])
def test_good_pages_pass_every_check(tmp_path: Path, make) -> None:
    res = run(make(tmp_path))
    assert res.decoded and res.passed, res.checks
    assert value(res, "dpi") >= 200
    assert not failed(res)


def test_floor_violations_are_named_with_their_measurement(tmp_path: Path) -> None:
    low = run(pages.write_page(tmp_path / "low.png", PageSpec(dpi=150)))
    assert failed(low) == {"dpi"} and value(low, "dpi") == 150.0
    grey = run(pages.write_page(tmp_path / "grey.png", PageSpec(mode="L")))
    assert failed(grey) == {"colour"} and value(grey, "colour") == "L"
    g4 = run(pages.g4_tiff(tmp_path / "g4.tif"))
    assert failed(g4) == {"colour"} and value(g4, "colour") == "1"
    blank = run(pages.write_page(tmp_path / "blank.png", PageSpec(blank=True, noise=0.01)))
    assert "blank" in failed(blank) and value(blank, "blank") == 0  # no text line, no mark
    skewed = run(pages.write_page(tmp_path / "skew.png", PageSpec(skew_deg=6.0)))
    assert failed(skewed) == {"skew_deg"} and abs(value(skewed, "skew_deg") - 6.0) < 0.3
    # wrong scale: an A4 page whose file says 400 dpi is a 105 x 149 mm "page"
    img = pages.render_page(PageSpec(dpi=200))
    img.save(tmp_path / "scale.png", dpi=(400, 400))
    assert failed(run(tmp_path / "scale.png")) == {"size_mm"}
    img.filter(ImageFilter.GaussianBlur(2.5)).save(tmp_path / "blur.png", dpi=(200, 200))
    assert failed(run(tmp_path / "blur.png")) == {"sharpness"}
    dark = pages.render_page(PageSpec()).point(lambda v: v // 8)
    dark.save(tmp_path / "dark.png", dpi=(200, 200))
    assert "brightness" in failed(run(tmp_path / "dark.png"))


@pytest.mark.parametrize("make,reason", [
    (lambda p: pages.corrupt(p / "c.tif"), "corrupt"),
    (lambda p: pages.truncated(p / "t.jpg"), "truncated"),
    (lambda p: pages.encrypted_pdf(p / "e.pdf"), "encrypted"),
], ids=["corrupt", "truncated", "encrypted-pdf"])
def test_broken_inputs_fail_decode_with_a_reason(tmp_path: Path, make, reason: str) -> None:
    res = run(make(tmp_path))
    assert not res.decoded and not res.passed
    assert reason in str(value(res, "decode")).lower()


def test_one_pixel_giant_and_altered_pages(tmp_path: Path) -> None:
    tiny = run(pages.one_pixel(tmp_path / "1px.png"))
    assert {"pixels", "size_mm"} <= failed(tiny)
    giant = run(pages.giant_tiff(tmp_path / "giant.tif"))
    assert "pixels" in failed(giant) and value(giant, "pixels") > 500
    assert value(giant, "dpi") == 2400.0
    p = pages.write_page(tmp_path / "x.png", PageSpec())
    altered = run(p, sha="0" * 64)
    assert failed(altered) == {"sha256"} and not altered.decoded
    assert "differs" in value(altered, "sha256")
    gone = check_page((tmp_path / "nope.png").as_uri(), "0" * 64, CFG, SITE, sources(tmp_path))
    assert "unreadable" in value(gone, "decode")
