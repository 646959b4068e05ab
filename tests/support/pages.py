"""Vietnamese page images as scanners really make them, and the broken ones.

Builds on :mod:`sohoa.samples` (Vietnamese text rendered with DejaVu Sans, skew, noise) and
adds the formats and failures scanning sites produce: TIFF LZW / G4 / multi-page, CMYK JPEG,
PNG with alpha or a palette, a scanner's PDF page, and corrupt, truncated, 1-pixel, 2400 dpi
and encrypted inputs. Reusable by any test or benchmark.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from sohoa.samples import SAMPLE_LINES, PageSpec, render_page, write_page

__all__ = [
    "SAMPLE_LINES", "PageSpec", "cmyk_jpeg", "corrupt", "encrypted_pdf", "g4_tiff",
    "giant_tiff", "multipage_tiff", "one_pixel", "palette_png", "png_with_alpha",
    "render_page", "scanner_pdf", "scanner_pdf_with_text", "text_lines", "truncated",
    "write_page",
]

DEFAULT = PageSpec()


def text_lines(n: int, seed: int = 0) -> tuple[str, ...]:
    """Different but realistic Vietnamese lines per page (so pages are not duplicates)."""
    lines = list(SAMPLE_LINES)
    k = seed % len(lines)
    return tuple(lines[k:] + lines[:k])[:n]


def cmyk_jpeg(path: Path, spec: PageSpec = DEFAULT) -> Path:
    render_page(spec).convert("CMYK").save(path, "JPEG", quality=90, dpi=(spec.dpi, spec.dpi))
    return path


def png_with_alpha(path: Path, spec: PageSpec = DEFAULT) -> Path:
    img = render_page(spec).convert("RGBA")
    img.putalpha(255)
    img.save(path, "PNG", dpi=(spec.dpi, spec.dpi))
    return path


def palette_png(path: Path, spec: PageSpec = DEFAULT) -> Path:
    img = render_page(spec).quantize(colors=64)
    img.save(path, "PNG", dpi=(spec.dpi, spec.dpi))
    return path


def g4_tiff(path: Path, spec: PageSpec = DEFAULT) -> Path:
    img = render_page(spec).convert("1")
    img.save(path, "TIFF", compression="group4", dpi=(spec.dpi, spec.dpi))
    return path


def multipage_tiff(path: Path, specs: list[PageSpec]) -> Path:
    frames = [render_page(s) for s in specs]
    frames[0].save(path, "TIFF", compression="tiff_lzw", save_all=True,
                   append_images=frames[1:], dpi=(specs[0].dpi, specs[0].dpi))
    return path


def scanner_pdf_pages(path: Path, specs: list[PageSpec]) -> Path:
    """A multi-page PDF as a document scanner writes it: one JPEG image filling each page."""
    import img2pdf

    images = []
    for spec in specs:
        buf = io.BytesIO()
        render_page(spec).save(buf, "JPEG", quality=85, dpi=(spec.dpi, spec.dpi))
        images.append(buf.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(img2pdf.convert(images))
    return path


def scanner_pdf(path: Path, spec: PageSpec = DEFAULT) -> Path:
    """A PDF as scanners write it: one JPEG image filling the page, no text."""
    import img2pdf

    buf = io.BytesIO()
    render_page(spec).save(buf, "JPEG", quality=90, dpi=(spec.dpi, spec.dpi))
    path.write_bytes(img2pdf.convert(buf.getvalue()))
    return path


def scanner_pdf_with_text(path: Path, spec: PageSpec = DEFAULT, hidden: str = "",
                          visible: str = "", in_form: bool = False) -> Path:
    """A scanner PDF page with text of its own over the image: ``hidden`` in render mode 3,
    as a scanner's (or an earlier OCR's) text layer is, and ``visible`` drawn in black, both
    in Helvetica (not embedded, as scanners write it); ``in_form``: the text in a form
    XObject the page draws, as ocrmypdf grafts its layer."""
    import pikepdf

    scanner_pdf(path, spec)
    with pikepdf.open(path, allow_overwriting_input=True) as pdf:
        page = pdf.pages[0]
        font = pdf.make_indirect(pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica,
            Encoding=pikepdf.Name.WinAnsiEncoding))
        ops = b""
        if hidden:
            ops += b"BT /FOld 11 Tf 3 Tr 1 0 0 1 60 700 Tm (%s) Tj ET\n" % hidden.encode("cp1252")
        if visible:
            ops += (b"q 0 g BT /FOld 30 Tf 0 Tr 1 0 0 1 60 790 Tm (%s) Tj ET Q\n"
                    % visible.encode("cp1252"))
        fonts = pikepdf.Dictionary(FOld=font)
        if in_form:
            form = pdf.make_stream(ops)
            form.Type, form.Subtype = pikepdf.Name.XObject, pikepdf.Name.Form
            form.BBox = page.mediabox
            form.Resources = pikepdf.Dictionary(Font=fonts)
            page.obj.Resources.XObject.OldText = form
            page.contents_add(pdf.make_stream(b"q /OldText Do Q"))
        else:
            page.obj.Resources.Font = fonts
            page.contents_add(pdf.make_stream(ops))
        pdf.save(path)
    return path


def encrypted_pdf(path: Path, spec: PageSpec = DEFAULT) -> Path:
    import pikepdf

    plain = path.with_suffix(".plain.pdf")
    scanner_pdf(plain, spec)
    with pikepdf.open(plain) as pdf:
        pdf.save(path, encryption=pikepdf.Encryption(owner="chu", user="mat-khau", R=6))
    plain.unlink()
    return path


def corrupt(path: Path) -> Path:
    """Bytes that claim to be a TIFF and are not."""
    path.write_bytes(b"II*\x00" + bytes(range(256)) * 20)
    return path


def truncated(path: Path, spec: PageSpec = DEFAULT) -> Path:
    buf = io.BytesIO()
    render_page(spec).save(buf, "JPEG", quality=90, dpi=(spec.dpi, spec.dpi))
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 3])
    return path


def one_pixel(path: Path) -> Path:
    Image.new("RGB", (1, 1), (255, 255, 255)).save(path, "PNG", dpi=(200, 200))
    return path


def giant_tiff(path: Path, dpi: int = 2400) -> Path:
    """An A4 page at 2400 dpi (about 560 megapixels), kept small on disk: bitonal, G4."""
    w, h = round(210 / 25.4 * dpi), round(297 / 25.4 * dpi)
    img = Image.new("1", (w, h), 1)
    img.save(path, "TIFF", compression="group4", dpi=(dpi, dpi))
    return path
