"""Synthetic scanned pages in Vietnamese, for the demo, the tests and the benchmarks.

Renders real Vietnamese text (with its diacritics) with a Unicode font, at a chosen dpi and
colour mode, optionally skewed and noisy, so that QC and OCR see what a scanner produces.
Pillow is imported lazily: the kernel must not need it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "C:/Windows/Fonts/arial.ttf",
)

SAMPLE_LINES = (
    "ỦY BAN NHÂN DÂN XÃ TÂN PHÚ",
    "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
    "Độc lập - Tự do - Hạnh phúc",
    "QUYẾT ĐỊNH về việc giao đất ở cho hộ gia đình, cá nhân",
    "Căn cứ Luật Tổ chức chính quyền địa phương ngày 19 tháng 6 năm 2015;",
    "Căn cứ Luật Đất đai ngày 18 tháng 01 năm 2024;",
    "Xét đề nghị của công chức Địa chính - Xây dựng xã,",
    "Điều 1. Giao cho ông Nguyễn Văn Hùng thửa đất số 125, tờ bản đồ số 07.",
    "Điều 2. Diện tích giao là 200 mét vuông, mục đích sử dụng: đất ở nông thôn.",
    "Điều 3. Văn phòng Ủy ban nhân dân xã chịu trách nhiệm thi hành quyết định này.",
    "Nơi nhận: như Điều 3; lưu văn thư, hồ sơ địa chính.",
    "TM. ỦY BAN NHÂN DÂN, CHỦ TỊCH: Trần Thị Thu Hằng",
)

A4_MM = (210.0, 297.0)


@dataclass(frozen=True)
class PageSpec:
    dpi: int = 200
    mode: str = "RGB"            # "RGB", "L" (grey) or "1" (bitonal)
    size_mm: tuple[float, float] = A4_MM
    text: tuple[str, ...] = SAMPLE_LINES
    font_pt: float = 12.0
    skew_deg: float = 0.0
    noise: float = 0.0           # share of pixels flipped to random grey
    blank: bool = False
    seed: int = 0


def font_path() -> str:
    for candidate in FONT_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError(
        "no Unicode font found for Vietnamese text; install fonts-dejavu-core")


def render_page(spec: PageSpec):
    """Return a PIL image of one page as a scanner would produce it."""
    from PIL import Image, ImageDraw, ImageFont

    w = round(spec.size_mm[0] / 25.4 * spec.dpi)
    h = round(spec.size_mm[1] / 25.4 * spec.dpi)
    paper = (250, 248, 240)
    img = Image.new("RGB", (w, h), paper)
    if not spec.blank:
        draw = ImageDraw.Draw(img)
        px = max(8, round(spec.font_pt / 72 * spec.dpi))
        font = ImageFont.truetype(font_path(), px)
        margin = round(20 / 25.4 * spec.dpi)
        y = margin
        for line in spec.text:
            draw.text((margin, y), line, font=font, fill=(20, 20, 35))
            y += round(px * 1.8)
            if y > h - margin:
                break
        # A red stamp: scans must be colour because seals and signatures are.
        r = round(12 / 25.4 * spec.dpi)
        cx, cy = w - margin - 2 * r, y + r
        if cy + r < h:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=(200, 30, 30),
                         width=max(2, r // 8))
    if spec.skew_deg:
        img = img.rotate(spec.skew_deg, resample=Image.Resampling.BICUBIC, expand=False,
                         fillcolor=paper)
    if spec.noise:
        rng = random.Random(spec.seed)
        pixels = img.load()
        assert pixels is not None  # None only for an image without pixel data
        for _ in range(int(w * h * spec.noise)):
            g = rng.randrange(0, 256)
            pixels[rng.randrange(w), rng.randrange(h)] = (g, g, g)
    if spec.mode != "RGB":
        img = img.convert(spec.mode)
    return img


def write_page(path: Path, spec: PageSpec = PageSpec(), **save_kw) -> Path:
    """Render and save a page; format from the suffix, dpi recorded in the file."""
    img = render_page(spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".tif": "TIFF", ".tiff": "TIFF", ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG",
           ".pdf": "PDF"}[path.suffix.lower()]
    kw: dict[str, Any] = {"dpi": (spec.dpi, spec.dpi)}
    if fmt == "PDF":
        kw = {"resolution": float(spec.dpi)}
    if fmt == "TIFF" and spec.mode != "1":
        kw["compression"] = "tiff_lzw"
    kw.update(save_kw)
    img.save(path, fmt, **kw)
    return path


def tiny_png(path: Path, dpi: int = 200, seed: int = 0) -> Path:
    """A very small but valid PNG page (for volume tests where pixels do not matter)."""
    from PIL import Image

    img = Image.new("RGB", (8, 8), (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "PNG", dpi=(dpi, dpi))
    return path


def page_jpegs(pages: int, dpi: int = 200, quality: int = 70) -> list[bytes]:
    """``pages`` distinct scanned pages as JPEG bytes, cheaply: a few rendered pages, each copy
    marked apart by a row of dots encoding its index, so no two pages share a digest."""
    import io

    bases = [render_page(PageSpec(seed=s, noise=0.002, dpi=dpi)) for s in range(6)]
    out = []
    for i in range(pages):
        img = bases[i % len(bases)].copy()
        for k in range(16):
            img.putpixel((40 + 3 * k, 40), (0, 0, 0) if (i >> k) & 1 else (250, 250, 250))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality, dpi=(dpi, dpi))
        out.append(buf.getvalue())
    return out


def scanner_pdf(path: Path, jpegs: list[bytes]) -> Path:
    """A multi-page PDF as a document scanner writes it (one JPEG per page), written under a
    temp name and renamed, so a watcher sees the whole document or nothing."""
    import img2pdf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(img2pdf.convert(jpegs))
    tmp.replace(path)
    return path


def incompressible_pdf(path: Path, pages: int, bytes_per_page: int, seed: int = 0) -> Path:
    """A multi-page PDF of uncompressed random grey page images, written to a temp name and
    renamed: its size on disk is what crosses the wire (upload tests and benchmarks)."""
    import os

    import pikepdf

    rnd = random.Random(seed)
    side = int(bytes_per_page ** 0.5)
    pdf = pikepdf.new()
    for _ in range(pages):
        img = pikepdf.Stream(pdf, rnd.randbytes(side * side))
        img.Type, img.Subtype = pikepdf.Name.XObject, pikepdf.Name.Image
        img.Width = img.Height = side
        img.ColorSpace, img.BitsPerComponent = pikepdf.Name.DeviceGray, 8
        pts = side * 72 / 300
        page = pdf.add_blank_page(page_size=(pts, pts))
        page.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=img))
        page.Contents = pikepdf.Stream(pdf, f"q {pts} 0 0 {pts} 0 0 cm /Im0 Do Q".encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    pdf.save(tmp, compress_streams=False)
    os.replace(tmp, path)
    return path
