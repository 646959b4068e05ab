"""Page quality checks: each a measured value and a pass/fail against QcConfig.

Runs in a process pool (``spawn``), never in the event loop. Header facts (dpi, colour mode,
physical size, pixel count) come from the full-resolution header; the pixel measurements (ink,
skew, brightness, sharpness) run on a copy downsampled to ``analysis_max_px`` on its long side,
which keeps the verdict (thin noise averages away, text stays dark) at a fraction of the cost.
A JPEG is decoded straight at reduced size (``draft``).

Every input, however broken, returns a result with a reason; nothing here raises.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from sohoa.config import QcConfig
from streams.sources import PageSources, SourceError

COLOUR_MODES = {"RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


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
    frames: int
    fmt: str
    luma: np.ndarray | None  # downsampled greyscale, float32 0..255; None when too large


def _check(name: str, value: Any, threshold: Any, passed: bool) -> dict[str, Any]:
    if isinstance(value, float):
        value = round(value, 4)
    return {"check": name, "value": value, "threshold": threshold, "passed": bool(passed)}


def check_page(uri: str, sha256: str, cfg: dict[str, Any], site_id: str,
               sources: PageSources) -> dict[str, Any]:
    """All checks of one page. Returns {"checks": [...], "passed": bool, "decoded": bool}."""
    qc = QcConfig(**cfg)
    checks: list[dict[str, Any]] = []
    try:
        data = read_verified(uri, sha256, site_id, sources)
        checks.append(_check("sha256", "ok", None, True))
        raster = load_raster(data, qc)
    except PageUnreadable as exc:
        checks.append(_check("decode", str(exc)[:300], None, False))
        return {"checks": checks, "passed": False, "decoded": False}
    except Exception as exc:  # any decoder bug on a hostile file is still just a bad page
        checks.append(_check("decode", f"corrupt: {type(exc).__name__}: {exc}"[:300], None,
                             False))
        return {"checks": checks, "passed": False, "decoded": False}
    checks.append(_check("decode", raster.fmt, None, True))
    checks.extend(measure(raster, qc))
    return {"checks": checks, "passed": all(c["passed"] for c in checks), "decoded": True,
            "frames": raster.frames}


def load_raster(data: bytes, qc: QcConfig) -> Raster:
    if data[:5] == b"%PDF-":
        return _load_pdf(data, qc)
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = None  # we bound the size ourselves, before decoding
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise PageUnreadable("corrupt: not a readable image") from None
    return _from_pil(img, _pil_dpi(img), qc)


def _pil_dpi(img: Any) -> float | None:
    dpi = img.info.get("dpi")
    if img.format == "JPEG" and img.info.get("jfif_unit") == 0:
        dpi = None  # JFIF aspect ratio only, no real density
    if not dpi:
        return None
    try:
        values = [float(v) for v in dpi[:2]]
    except (TypeError, ValueError):
        return None
    if not values or min(values) <= 1.0:
        return None
    return min(values)


def _from_pil(img: Any, dpi: float | None, qc: QcConfig) -> Raster:
    from PIL import Image

    fmt = img.format or "image"
    width, height = img.size
    frames = int(getattr(img, "n_frames", 1) or 1)
    mode = img.mode
    colour = mode in COLOUR_MODES
    if mode == "P":
        pal = img.getpalette() or []
        rgb = np.array(pal[: (len(pal) // 3) * 3], dtype=np.int16).reshape(-1, 3)
        colour = bool(len(rgb)) and bool((rgb.max(axis=1) - rgb.min(axis=1) > 8).any())
        mode = "P(colour)" if colour else "P(grey)"
    if width * height > qc.max_megapixels * 1e6 or width < 1 or height < 1:
        return Raster(mode, colour, width, height, dpi, frames, fmt, None)
    longest = max(width, height)
    if img.format == "JPEG" and longest > 2 * qc.analysis_max_px:
        img.draft(None, (width * qc.analysis_max_px // longest,
                         height * qc.analysis_max_px // longest))
    try:
        img.load()
    except OSError as exc:
        raise PageUnreadable(f"truncated or corrupt: {exc}") from None
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
    luma = np.asarray(grey, dtype=np.float32)
    return Raster(mode, colour, width, height, dpi, frames, fmt, luma)


def _load_pdf(data: bytes, qc: QcConfig) -> Raster:
    """A scanner's PDF page: the largest image on the first page, dpi from the page size."""
    import pikepdf
    from pikepdf import PdfImage

    try:
        pdf = pikepdf.open(io.BytesIO(data))
    except pikepdf.PasswordError:
        raise PageUnreadable("encrypted PDF: cannot be read without its password") from None
    except pikepdf.PdfError as exc:
        raise PageUnreadable(f"corrupt PDF: {exc}") from None
    with pdf:
        if pdf.is_encrypted:
            raise PageUnreadable("encrypted PDF: archives must not be encrypted")
        if len(pdf.pages) == 0:
            raise PageUnreadable("corrupt PDF: no pages")
        page = pdf.pages[0]
        best = None
        found = page.get_images() if hasattr(page, "get_images") else page.images
        for _name, raw in found.items():
            im = PdfImage(raw)
            if best is None or im.width * im.height > best.width * best.height:
                best = im
        if best is None:
            raise PageUnreadable("PDF page has no scanned image (not a scan)")
        box = [float(v) for v in page.mediabox]
        page_w_in = abs(box[2] - box[0]) / 72.0
        page_h_in = abs(box[3] - box[1]) / 72.0
        rotate = int(page.obj.get("/Rotate", 0)) % 180
        w_in, h_in = (page_h_in, page_w_in) if rotate else (page_w_in, page_h_in)
        dpi = min(best.width / w_in, best.height / h_in) if w_in > 0 and h_in > 0 else None
        if best.width * best.height > qc.max_megapixels * 1e6:
            colour = best.colorspace in ("/DeviceRGB", "/DeviceCMYK", "/ICCBased")
            return Raster(str(best.colorspace), colour, best.width, best.height, dpi,
                          len(pdf.pages), "PDF", None)
        try:
            pil = best.as_pil_image()
        except Exception as exc:
            raise PageUnreadable(f"PDF image cannot be decoded: {exc}") from None
        pil.format = None
        raster = _from_pil(pil, dpi, qc)
        raster.fmt, raster.frames = "PDF", len(pdf.pages)
        return raster


# --- measurements ------------------------------------------------------------------------

def measure(r: Raster, qc: QcConfig) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    mp = r.width * r.height / 1e6
    out.append(_check("pixels", round(mp, 3), qc.max_megapixels,
                      mp <= qc.max_megapixels and min(r.width, r.height) >= qc.min_side_px))
    out.append(_check("dpi", round(r.dpi, 1) if r.dpi else None, qc.min_dpi,
                      r.dpi is not None and r.dpi + 0.5 >= qc.min_dpi))
    out.append(_check("colour", r.mode, "colour" if qc.require_colour else None,
                      r.colour or not qc.require_colour))
    if r.dpi:
        w_mm, h_mm = r.width / r.dpi * 25.4, r.height / r.dpi * 25.4
        short, long_ = sorted((w_mm, h_mm))
        ok = short >= qc.min_width_mm and long_ <= qc.max_width_mm
        out.append(_check("size_mm", f"{w_mm:.0f}x{h_mm:.0f}",
                          f"{qc.min_width_mm:.0f}..{qc.max_width_mm:.0f}", ok))
    else:
        out.append(_check("size_mm", None, f"{qc.min_width_mm:.0f}..{qc.max_width_mm:.0f}",
                          False))
    if r.luma is None or r.luma.size < 16:
        return out
    luma = r.luma
    ink_mask = _ink_mask(luma)
    ink = float(ink_mask.mean())
    out.append(_check("blank", ink, qc.blank_max_ink, ink > qc.blank_max_ink))
    mean = float(luma.mean())
    out.append(_check("brightness", mean, f"{qc.min_mean_luma:.0f}..{qc.max_mean_luma:.0f}",
                      qc.min_mean_luma <= mean <= qc.max_mean_luma))
    if ink > qc.blank_max_ink:
        angle = skew_angle(ink_mask, qc.skew_search_deg)
        out.append(_check("skew_deg", angle, qc.max_skew_deg, abs(angle) <= qc.max_skew_deg))
        sharp = sharpness(luma, ink_mask)
        out.append(_check("sharpness", sharp, qc.min_sharpness, sharp >= qc.min_sharpness))
    return out


def _ink_mask(luma: np.ndarray) -> np.ndarray:
    # Relative to this page's paper (its bright 90th percentile), so cream or grey paper and a
    # dark scan are judged on their contrast, not on absolute levels.
    paper = float(np.percentile(luma, 90))
    return luma < paper * 0.6


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
    """Edge strength where there is ink: the 90th percentile of the absolute Laplacian over
    pixels next to ink. Blur spreads an edge, so its Laplacian peaks drop."""
    lap = np.abs(4 * luma[1:-1, 1:-1] - luma[:-2, 1:-1] - luma[2:, 1:-1]
                 - luma[1:-1, :-2] - luma[1:-1, 2:])
    near = ink[1:-1, 1:-1]
    if near.sum() < 10:
        return 0.0
    return float(np.percentile(lap[near], 90))
