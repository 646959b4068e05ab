"""The pages of one scanned document (JPEG, PNG, TIFF of one or many pages, PDF), as the OCR
engine needs them: the image Tesseract reads (:meth:`PageSource.pix`) and the original page,
for the output PDF (:meth:`PageSource.append_page`).

Tesseract reads an image as the ``tesseract`` command does (leptonica, from the file's bytes),
so a page is decoded for OCR once and never re-encoded for it; only what leptonica cannot read
(or a PDF page that is more than one image) goes through Pillow or pdfium first. The output
page keeps the original image: a JPEG's or a G4 TIFF's bytes and a PNG's compressed data pass
through, other TIFF pixels are deflated losslessly, a PDF page is copied as it is.
"""

from __future__ import annotations

import io
from typing import Any

import pikepdf

from streams.pdf_images import pixels_page, png_page
from streams.tesseract import Pix, TesseractError

RASTER_DPI = 300   # a PDF page that is not one image is rasterised at this resolution
_PASSTHROUGH_TIFF = {"group3", "group4", "jpeg", "tiff_jpeg"}  # img2pdf copies these bytes


class SourceError(Exception):
    """The document cannot be read as a scan; ``str(exc)`` says why (for the operator)."""


def open_source(data: bytes) -> PageSource:
    if data[:5] == b"%PDF-":
        return PdfSource(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TiffSource(data)
    return ImageSource(data)


class PageSource:
    """One document's pages. Pages copied into an output PDF may refer to PDFs this source
    holds: :meth:`close` only after that output is saved."""

    page_count = 1

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._held: list[pikepdf.Pdf] = []

    def pix(self, index: int) -> Pix:
        """The image of page ``index`` (0-based) for Tesseract."""
        raise NotImplementedError

    def append_page(self, out: pikepdf.Pdf, index: int) -> pikepdf.Page:
        """Page ``index`` with its original image, added to ``out``; returns it."""
        raise NotImplementedError

    def _copy_first_page(self, out: pikepdf.Pdf, pdf_bytes: bytes) -> pikepdf.Page:
        src = pikepdf.open(io.BytesIO(pdf_bytes))
        self._held.append(src)
        out.pages.append(src.pages[0])
        return out.pages[-1]

    def close(self) -> None:
        for pdf in self._held:
            pdf.close()
        self._held.clear()


class ImageSource(PageSource):
    """JPEG, PNG (or any single image Pillow opens)."""

    def pix(self, index: int) -> Pix:
        try:
            return Pix.from_bytes(self.data)
        except TesseractError:
            return pix_from_pil(_open_pil(self.data))

    def append_page(self, out: pikepdf.Pdf, index: int) -> pikepdf.Page:
        page = png_page(out, self.data)
        if page is not None:
            return page
        return self._copy_first_page(out, _img2pdf(self.data))


class TiffSource(PageSource):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._img = _open_pil(data)
        self.page_count = getattr(self._img, "n_frames", 1)

    def _frame(self, index: int) -> Any:
        try:
            self._img.seek(index)
            self._img.load()
        except (OSError, ValueError, EOFError) as exc:
            raise SourceError(f"undecodable TIFF page {index + 1}: {exc}") from None
        return self._img

    def pix(self, index: int) -> Pix:
        try:
            return Pix.from_bytes(self.data, tiff_frame=index)
        except TesseractError:
            return pix_from_pil(self._frame(index))

    def append_page(self, out: pikepdf.Pdf, index: int) -> pikepdf.Page:
        frame = self._frame(index)
        compression = frame.info.get("compression", "")
        if self.page_count == 1 and compression in _PASSTHROUGH_TIFF:
            return self._copy_first_page(out, _img2pdf(self.data))
        if frame.mode == "1":  # bilevel: G4 again (lossless), as archives keep it
            buf = io.BytesIO()
            frame.save(buf, "TIFF", compression="group4", dpi=frame.info.get("dpi", (0, 0)))
            return self._copy_first_page(out, _img2pdf(buf.getvalue()))
        return pixels_page(out, frame)


class PdfSource(PageSource):
    """A scanner's PDF: each page is kept as it is (its images still encoded); Tesseract
    reads the page's one image when it fills the page, else the page rasterised."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        try:
            self._pdf = pikepdf.open(io.BytesIO(data))
        except pikepdf.PasswordError:
            raise SourceError("encrypted PDF") from None
        except pikepdf.PdfError as exc:
            raise SourceError(f"corrupt PDF: {exc}") from None
        self._held.append(self._pdf)
        if self._pdf.is_encrypted:
            raise SourceError("encrypted PDF")
        self.page_count = len(self._pdf.pages)

    def append_page(self, out: pikepdf.Pdf, index: int) -> pikepdf.Page:
        out.pages.append(self._pdf.pages[index])
        return out.pages[-1]

    def pix(self, index: int) -> Pix:
        image = _full_page_image(self._pdf.pages[index])
        if image is not None:
            raw, dpi = image
            if raw.filters == [pikepdf.Name.DCTDecode] and not raw.obj.get("/Decode"):
                try:  # a JPEG as the scanner wrote it: read as the tesseract command would
                    pix = Pix.from_bytes(raw.obj.read_raw_bytes())
                    pix.set_resolution(dpi, dpi)
                    return pix
                except TesseractError:
                    pass
            try:
                return pix_from_pil(raw.as_pil_image(), dpi)
            except Exception:  # an encoding Pillow cannot turn into pixels: pdfium draws it
                pass
        return self._rasterise(index)

    def _rasterise(self, index: int) -> Pix:
        import pypdfium2

        doc = pypdfium2.PdfDocument(self.data)
        try:
            page = doc[index]
            # pdfium applies the page's /Rotate; turning back by it draws the page in its own
            # (unrotated) space, the one the text layer is grafted into.
            rotate = int(page.get_rotation())
            bitmap = page.render(scale=RASTER_DPI / 72, rotation=(360 - rotate) % 360,
                                 may_draw_forms=False)
            return pix_from_pil(bitmap.to_pil(), RASTER_DPI)
        finally:
            doc.close()


def _full_page_image(page: pikepdf.Page) -> tuple[Any, int] | None:
    """The page's only image and its resolution, when the page draws exactly that image,
    upright, over its whole crop box (what a scanner writes); else None."""
    try:
        images = list(page.get_images(recursive=False).values())
        ops = pikepdf.parse_content_stream(page)
    except Exception:
        return None
    if len(images) != 1:
        return None
    kinds = [str(op) for _, op in ops]
    if set(kinds) != {"q", "Q", "cm", "Do"} or kinds.count("Do") != 1 or kinds.count("cm") != 1:
        return None
    a, b, c, d, e, f = (float(x) for x in next(o for o, op in ops if str(op) == "cm"))
    x0, y0, x1, y1 = (float(v) for v in page.cropbox)
    if b or c or a <= 0 or d <= 0:
        return None
    if max(abs(e - x0), abs(f - y0), abs(a - (x1 - x0)), abs(d - (y1 - y0))) > 1:
        return None
    raw = pikepdf.PdfImage(images[0])
    return raw, round(raw.width / (a / 72))


def pix_from_pil(img: Any, dpi: int | None = None) -> Pix:
    """A Pillow image as a leptonica one (as BMP: leptonica reads it with a copy per row);
    transparency is laid on white paper, odd modes become RGB."""
    from PIL import Image

    if dpi is None:
        dpi = round(float((img.info.get("dpi") or (0, 0))[0] or 0))
    if img.mode not in ("1", "L", "RGB"):
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(paper, rgba).convert("RGB")
        elif img.mode.startswith("I;16") or img.mode == "I":
            img = img.point(lambda v: v / 256).convert("L")
        else:
            img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "BMP")
    pix = Pix.from_bytes(buf.getvalue())
    if dpi:
        pix.set_resolution(dpi, dpi)
    return pix


def _open_pil(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise SourceError(f"undecodable image: {exc}") from None


def _img2pdf(data: bytes) -> bytes:
    """img2pdf passes a JPEG's (and a G4 TIFF's) bytes through; what it refuses is decoded
    and laid on white first."""
    import img2pdf

    try:
        return img2pdf.convert(data, rotation=img2pdf.Rotation.ifvalid)
    except Exception:
        img = _open_pil(data)
        try:
            img.load()
        except (OSError, ValueError) as exc:
            raise SourceError(f"undecodable image: {exc}") from None
        out = pikepdf.new()
        pixels_page(out, img)
        buf = io.BytesIO()
        out.save(buf)
        return buf.getvalue()
