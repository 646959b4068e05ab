"""The searchable PDF of one file: each original page with an invisible text layer grafted on
it, declared PDF/A-2b with pikepdf (no Ghostscript pass, no re-rendering). The text layer is
ocrmypdf's (its fpdf2 renderer, from Tesseract's hOCR), the one ocrmypdf's own output has.

PDF/A-2b asks of this output: fonts embedded (Tesseract's glyphless font is), an output intent
(sRGB, from pikepdf), XMP metadata agreeing with the document information, and device colour
only where the output intent covers it: DeviceGray and DeviceRGB are, DeviceCMYK (a CMYK JPEG
kept as it is) is given a DefaultCMYK profile on its page instead of being converted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pikepdf
from pikepdf import Matrix, Name

PDFA_FLAVOUR = "2b"
# Ghostscript's generic CMYK profile (libgs-common, installed with ghostscript).
CMYK_PROFILES = (Path("/usr/share/color/icc/ghostscript/default_cmyk.icc"),)


class PdfaUnsupported(Exception):
    """A page needs something this module cannot declare (e.g. CMYK with no profile)."""


def text_layer_matrix(text_box: tuple[float, float], page_box: list[float],
                      turn_cw: int) -> Matrix:
    """Maps Tesseract's text page (drawn over the image turned ``turn_cw`` degrees clockwise
    to be upright) onto the original page's box in the page's own, unrotated space."""
    wt, ht = text_box
    x0, y0, x1, y1 = page_box
    wp, hp = x1 - x0, y1 - y0
    if turn_cw in (90, 270):
        sx, sy = wp / ht, hp / wt
    else:
        sx, sy = wp / wt, hp / ht
    # centre the text page, turn it back (counter-clockwise in PDF terms), scale, place.
    return (Matrix().translated(-wt / 2, -ht / 2)
            @ Matrix().rotated(turn_cw % 360)
            @ Matrix().scaled(sx, sy)
            @ Matrix().translated(x0 + wp / 2, y0 + hp / 2))


def graft_text_layer(out: pikepdf.Pdf, page: pikepdf.Page, text_page: pikepdf.Page,
                     turn_cw: int) -> None:
    """Draw ``text_page`` (an invisible-text page) over ``page`` as a form XObject, after the
    page's own content, so the image stays as it was. Fonts shared by text pages are copied
    into ``out`` once (pikepdf keeps one copy per foreign object)."""
    text_page.contents_coalesce()
    contents = text_page.obj.get(Name.Contents)
    data = contents.read_bytes() if contents is not None else b""
    if not data.strip():
        return
    box = [float(v) for v in text_page.mediabox]
    matrix = text_layer_matrix((box[2] - box[0], box[3] - box[1]),
                               [float(v) for v in page.cropbox], turn_cw)
    form = out.make_stream(data)
    form.Type = Name.XObject
    form.Subtype = Name.Form
    form.BBox = pikepdf.Array(box)
    form.Resources = out.copy_foreign(text_page.obj.get(Name.Resources, pikepdf.Dictionary()))
    name = Name("/OCR-Text")
    resources = page.obj.get(Name.Resources)
    if resources is None:
        page.obj.Resources = resources = pikepdf.Dictionary()
    xobjects = resources.get(Name.XObject)
    if xobjects is None:
        resources.XObject = xobjects = pikepdf.Dictionary()
    while name in xobjects:
        name = Name(str(name) + "x")
    xobjects[name] = form
    # The page's own content is wrapped in q/Q so a state it leaves behind (a cm, a clip)
    # cannot move the text layer.
    page.contents_coalesce()
    page.contents_add(out.make_stream(b"q\n"), prepend=True)
    page.contents_add(out.make_stream(
        b"Q\nq %s cm %s Do Q\n" % (matrix.encode(), str(name).encode())))


def use_cmyk_profile(out: pikepdf.Pdf, page: pikepdf.Page,
                     cache: dict[str, pikepdf.Object]) -> None:
    """Give a page that draws DeviceCMYK images a DefaultCMYK profile (PDF/A-2 6.2.4.3)."""
    resources = page.obj.get(Name.Resources)
    if resources is None:
        return
    uses_cmyk = any(
        img.get(Name.ColorSpace) == Name.DeviceCMYK
        for img in resources.get(Name.XObject, pikepdf.Dictionary()).values()
        if isinstance(img, pikepdf.Stream) and img.get(Name.Subtype) == Name.Image)
    if not uses_cmyk:
        return
    if "cmyk" not in cache:
        profile = next((p for p in CMYK_PROFILES if p.exists()), None)
        if profile is None:
            raise PdfaUnsupported(
                "CMYK page and no CMYK ICC profile to declare it (install ghostscript)")
        icc = out.make_stream(profile.read_bytes())
        icc.N = 4
        cache["cmyk"] = out.make_indirect(pikepdf.Array([Name.ICCBased, icc]))
    spaces = resources.get(Name.ColorSpace)
    if spaces is None:
        resources.ColorSpace = spaces = pikepdf.Dictionary()
    spaces[Name.DefaultCMYK] = cache["cmyk"]


def render_text_pages(pages: list[tuple[int, Any, float]], dest: Path) -> None:
    """Invisible-text pages, one per ``(n, ocrmypdf OcrElement page, dpi)``, into ``dest``
    (ocrmypdf's fpdf2 renderer: glyphless font, words stretched over their boxes)."""
    import ocrmypdf
    from ocrmypdf.font import MultiFontManager
    from ocrmypdf.fpdf_renderer import Fpdf2MultiPageRenderer

    fonts = MultiFontManager(Path(ocrmypdf.__file__).parent / "data")
    Fpdf2MultiPageRenderer(pages, fonts, invisible_text=True).render(dest)


def save(out: pikepdf.Pdf, path: Path, pdfa: bool, title: str) -> None:
    """Write ``out`` to ``path``; as PDF/A-2b (declared and structurally repaired by pikepdf)
    when ``pdfa``."""
    out.docinfo[Name.Title] = title
    out.docinfo[Name.Producer] = f"sohoa (Tesseract, pikepdf {pikepdf.__version__})"
    if not pdfa:
        out.save(path, compress_streams=True,
                 object_stream_mode=pikepdf.ObjectStreamMode.generate)
        return
    from pikepdf.pdfa import prepare, resolve_save_kwargs

    prepare(out, PDFA_FLAVOUR, output_intent="sRGB")
    out.save(path, **resolve_save_kwargs(PDFA_FLAVOUR))
