"""Page quality checks: each a measured value and a pass/fail against QcConfig.

Runs in a process pool (``spawn``), never in the event loop. :func:`check_document_pages`
checks any subset of one document's pages, one page decoded at a time (a 500-page PDF is
split by the caller into chunks that several pool workers share). Header facts (dpi, colour
mode, physical size, pixel count) come from the page's header; the pixel measurements (blank,
brightness, skew, sharpness) run on a copy downsampled to ``analysis_max_px`` on its long
side, which keeps the verdict (thin noise averages away, text stays dark) at a fraction of the
cost. A JPEG is decoded straight at reduced size (``draft``).

Every input, however broken, returns a result with a reason; nothing here raises. Results
are frozen dataclasses (:class:`Check`, :class:`PageQc`): they travel back from the pool by
pickle, and the OCR app turns them into ``PageChecked`` events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from sohoa.config import QcConfig
from sohoa.documents import Document, DocumentRejected, PageInfo, open_document
from streams.sources import PageSources, SourceError
from streams.textmarks import find_content, ink_mask

COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


class PageUnreadable(Exception):
    """The page cannot be read or decoded; ``str(exc)`` is the reason."""


def read_verified(uri: str, sha256: str, site_id: str, sources: PageSources) -> bytes:
    """The page's bytes, read only within the site's sources and proven to be what it hashed."""
    try:
        return sources.read_verified(site_id, uri, sha256)
    except SourceError as exc:
        raise PageUnreadable(str(exc)) from None


@dataclass
class Raster:
    """What the checks need from one page: header facts and an analysis image."""

    mode: str
    colour: bool
    width: int
    height: int
    dpi: float | None
    width_mm: float | None
    height_mm: float | None
    fmt: str
    luma: np.ndarray | None  # downsampled greyscale, float32 0..255; None when too large


CheckValue = float | int | str | None


@dataclass(frozen=True)
class Check:
    """One check of one page: what was measured, against what, and whether it passed.
    Its fields are those of :class:`sohoa.events.CheckResult`, which it becomes."""

    check: str
    value: CheckValue
    threshold: CheckValue
    passed: bool


@dataclass(frozen=True)
class PageQc:
    """One page's checks and their outcome; the physical size in millimetres when known."""

    page_index: int
    checks: tuple[Check, ...]
    passed: bool
    decoded: bool
    width_mm: float | None = None
    height_mm: float | None = None

    def failing(self, check: Check) -> PageQc:
        """This page with one more check, a failed one (found after the pool's checks)."""
        return replace(self, checks=(*self.checks, check), passed=False)


@dataclass(frozen=True)
class FirstPageQc:
    """:func:`check_page`'s answer: the first page's checks, and the document's page count
    when it could be opened."""

    checks: tuple[Check, ...]
    passed: bool
    decoded: bool
    frames: int | None = None


def _check(name: str, value: CheckValue, threshold: CheckValue, passed: bool) -> Check:
    if isinstance(value, float):
        value = round(value, 4)
    return Check(name, value, threshold, bool(passed))


def unreadable(page_index: int, reason: str) -> PageQc:
    """A page that could not be decoded, with the reason as its one check."""
    return PageQc(page_index, (_check("decode", reason, None, False),), passed=False,
                  decoded=False)


def plain(exc: BaseException) -> str:
    """An exception as a sentence for the operator: no object reprs, one line."""
    if isinstance(exc, DocumentRejected):
        return f"{exc.reason}: {exc.detail}"
    text = _REPR.sub("the file", str(exc)).strip().splitlines()
    return f"corrupt: cannot be decoded ({type(exc).__name__}" + (
        f": {text[0][:200]})" if text else ")")


# --- entry points ---------------------------------------------------------------------------

def check_document_pages(path: str, media_type: str, pages: list[tuple[int, str]],
                         qc: QcConfig) -> list[PageQc]:
    """Check ``pages`` [(page_index, expected page digest)] of one document, one result each.
    Each page's digest is recomputed from the bytes first; a page that differs is not
    measured."""
    try:
        doc = open_document(Path(path), media_type or None)
    except Exception as exc:  # the whole document is unreadable: every page says why
        reason = plain(exc)
        return [_result(i, [_check("decode", reason[:300], None, False)], None)
                for i, _ in pages]
    with doc:
        return [_check_page_of(doc, i, expected, qc) for i, expected in pages]


def check_page(uri: str, sha256: str, qc: QcConfig, site_id: str,
               sources: PageSources) -> FirstPageQc:
    """The first page of a document named by URI, read only within the site's sources and
    proven by the whole file's SHA-256 (the event contract before documents)."""
    try:
        with sources.open_verified(site_id, uri, sha256) as page:
            try:
                doc = open_document(Path(page.path))
            except Exception as exc:
                return FirstPageQc((_check("sha256", "ok", None, True),
                                    _check("decode", plain(exc)[:300], None, False)),
                                   passed=False, decoded=False)
            with doc:
                res = _check_page_of(doc, 1, None, qc)
                frames = doc.page_count
    except SourceError as exc:
        if str(exc).startswith("sha256 mismatch"):
            return FirstPageQc((_sha_mismatch(),), passed=False, decoded=False)
        return FirstPageQc((_check("decode", str(exc)[:300], None, False),), passed=False,
                           decoded=False)
    checks = (_check("sha256", "ok", None, True), *res.checks)
    return FirstPageQc(checks, passed=res.passed, decoded=res.decoded, frames=frames)


def _sha_mismatch() -> Check:
    # Says nothing of what the file now holds: the reason is read by people who must not
    # learn a replaced page's content from it.
    return _check("sha256", "page content differs from the page scanned at the site "
                            "(changed or replaced since)", None, False)


def _result(i: int, checks: list[Check], r: Raster | None) -> PageQc:
    decoded = r is not None
    return PageQc(i, tuple(checks), passed=decoded and all(c.passed for c in checks),
                  decoded=decoded,
                  width_mm=round(r.width_mm, 1) if r and r.width_mm else None,
                  height_mm=round(r.height_mm, 1) if r and r.height_mm else None)


def _check_page_of(doc: Document, i: int, expected: str | None, qc: QcConfig) -> PageQc:
    checks: list[Check] = []
    try:
        if expected is not None:
            if doc.page_sha256(i) != expected:
                return _result(i, [_sha_mismatch()], None)
            checks.append(_check("sha256", "ok", None, True))
        raster = load_raster(doc, i, qc)
    except Exception as exc:  # any decoder failure on a hostile file is still just a bad page
        checks.append(_check("decode", plain(exc)[:300], None, False))
        return _result(i, checks, None)
    checks.append(_check("decode", raster.fmt, None, True))
    checks.extend(measure(raster, qc))
    return _result(i, checks, raster)


# --- one page's raster ----------------------------------------------------------------------

def load_raster(doc: Document, i: int, qc: QcConfig) -> Raster:
    info = doc.page_info(i)
    w, h = info.width_px, info.height_px
    if w * h > qc.max_megapixels * 1e6 or w < 1 or h < 1:
        return _raster(info, _declared_colour(info.mode), info.mode, None)
    img = doc.page_image(i, draft_px=qc.analysis_max_px)
    mode, colour = _colour(img)
    return _raster(info, colour, mode, _analysis_luma(img, qc))


def _raster(info: PageInfo, colour: bool, mode: str, luma: np.ndarray | None) -> Raster:
    return Raster(mode, colour, info.width_px, info.height_px, info.dpi, info.width_mm,
                  info.height_mm, info.fmt, luma)


def _declared_colour(mode: str) -> bool:
    return mode in COLOUR_MODES


def _colour(img: Any) -> tuple[str, bool]:
    mode = img.mode
    if mode in ("P", "PA"):
        pal = img.getpalette() or []
        rgb = np.array(pal[: (len(pal) // 3) * 3], dtype=np.int16).reshape(-1, 3)
        colour = bool(len(rgb)) and bool((rgb.max(axis=1) - rgb.min(axis=1) > 8).any())
        return ("P(colour)" if colour else "P(grey)"), colour
    return mode, mode in COLOUR_MODES


def _analysis_luma(img: Any, qc: QcConfig) -> np.ndarray:
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Transparent areas are paper, not ink.
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    grey = img.convert("L")
    longest = max(grey.size)
    if longest > qc.analysis_max_px:
        scale = qc.analysis_max_px / longest
        grey = grey.resize((max(1, round(grey.width * scale)), max(1, round(grey.height * scale))),
                           Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float32)


# --- measurements ------------------------------------------------------------------------

def measure(r: Raster, qc: QcConfig) -> list[Check]:
    out: list[Check] = []
    mp = r.width * r.height / 1e6
    out.append(_check("pixels", round(mp, 3), qc.max_megapixels,
                      mp <= qc.max_megapixels and min(r.width, r.height) >= qc.min_side_px))
    out.append(_check("dpi", round(r.dpi, 1) if r.dpi else None, qc.min_dpi,
                      r.dpi is not None and r.dpi + 0.5 >= qc.min_dpi))
    out.append(_check("colour", r.mode, "colour" if qc.require_colour else None,
                      r.colour or not qc.require_colour))
    size_range = f"{qc.min_width_mm:.0f}..{qc.max_width_mm:.0f}"
    if r.width_mm and r.height_mm:
        short, long_ = sorted((r.width_mm, r.height_mm))
        ok = short >= qc.min_width_mm and long_ <= qc.max_width_mm
        out.append(_check("size_mm", f"{r.width_mm:.0f}x{r.height_mm:.0f}", size_range, ok))
    else:
        out.append(_check("size_mm", None, size_range, False))
    if r.luma is None or r.luma.size < 16:
        return out
    luma = r.luma
    long_mm = max(r.width_mm or 0, r.height_mm or 0) or qc.assumed_long_side_mm
    content = find_content(luma, max(luma.shape) / long_mm, qc)
    out.append(_check("blank", float(content.items), 1, content.items >= 1))
    mean = float(luma.mean())
    out.append(_check("brightness", mean, f"{qc.min_mean_luma:.0f}..{qc.max_mean_luma:.0f}",
                      qc.min_mean_luma <= mean <= qc.max_mean_luma))
    if content.text is not None:  # skew is the angle of text lines: stamps do not count
        angle = skew_angle(content.text, qc.skew_search_deg)
        out.append(_check("skew_deg", angle, qc.max_skew_deg, abs(angle) <= qc.max_skew_deg))
    if content.items:
        sharp = sharpness(luma, ink_mask(luma, qc))
        out.append(_check("sharpness", sharp, qc.min_sharpness_ratio,
                          sharp >= qc.min_sharpness_ratio))
    return out


def skew_angle(ink: np.ndarray, search_deg: float = 10.0, max_points: int = 60_000) -> float:
    """Text-line angle (degrees, counter-clockwise positive) by projection profiles: the
    angle at which rows of ink are sharpest."""
    ys, xs = np.nonzero(ink)
    if len(ys) < 20:
        return 0.0
    if len(ys) > max_points:
        idx = np.random.default_rng(0).choice(len(ys), max_points, replace=False)
        ys, xs = ys[idx], xs[idx]
    ys = ys.astype(np.float32)
    xs = xs.astype(np.float32) - ink.shape[1] / 2
    offset = ink.shape[1]  # keeps rotated positions non-negative

    def score(angles: np.ndarray) -> np.ndarray:
        # One-pixel bins: finer bins alias (at 0° every row would fill only every other bin).
        out = np.empty(len(angles), dtype=np.float64)
        for i, a in enumerate(np.deg2rad(angles)):
            proj = np.floor(ys * np.cos(a) + xs * np.sin(a) + offset).astype(np.int32)
            hist = np.bincount(np.clip(proj, 0, None))
            out[i] = float(np.dot(hist, hist))
        return out

    coarse = np.arange(-search_deg, search_deg + 1e-6, 0.5, dtype=np.float32)
    best = float(coarse[int(np.argmax(score(coarse)))])
    fine = np.arange(best - 0.5, best + 0.5 + 1e-6, 0.1, dtype=np.float32)
    return round(float(fine[int(np.argmax(score(fine)))]), 2)


def sharpness(luma: np.ndarray, ink: np.ndarray) -> float:
    """Edge strength where there is ink, over the ink's contrast: the 90th percentile of the
    absolute Laplacian over ink pixels, divided by paper minus the darkest ink (its 10th
    percentile). Blur spreads an edge, so its Laplacian peaks drop; a dark or washed-out scan
    lowers both alike."""
    lap = np.abs(4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1]
                 - luma[1:-1, :-2] - luma[1:-1, 2:])
    near = ink[1:-1, 1:-1]
    if near.sum() < 10:
        return 0.0
    contrast = float(np.percentile(luma, 90)) - float(np.percentile(luma[ink], 10))
    return float(np.percentile(lap[near], 90)) / max(contrast, 1.0)
