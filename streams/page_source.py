"""The pages of one scanned document (JPEG, PNG, TIFF of one or many pages, PDF), as the OCR
engine needs them: the image Tesseract reads (:meth:`PageSource.pix`) and the original page,
untouched, for the output PDF (:meth:`PageSource.append_page`).

Images go to Tesseract as the ``tesseract`` command reads them (leptonica, from the file's
bytes), so a JPEG or PNG page is decoded once and never re-encoded; only what leptonica cannot
read (or a PDF page drawn with more than one image) goes through Pillow or pdfium first. The
output page is img2pdf's: a JPEG's bytes pass through as they are, PNG and TIFF pixels are
kept losslessly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import pikepdf

from streams.tesseract import Pix, TesseractError

# Tesseract reads images up to this size in either dimension (and PDF pages are rasterised
# at no more than this resolution).
RASTER_DPI = 300


class SourceError(Exception):
    """The document cannot be read as a scan; ``str(exc)`` says why (for the operator)."""


def open_source(data: bytes) -> PageSource:
    if data[:5] == b"%PDF-":
        return PdfSource(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TiffSource(data)
    return ImageSource(data)


@dataclass
class PageSource:
    data: bytes
    page_count: int = 1
    _pdf: pikepdf.Pdf | None = field(default=None, repr=False)

    def pix(self, index: int) -> Pix:
        """The image of page ``index`` (0-based) for Tesseract."""
        raise NotImplementedError

    def append_page(self, out: pikepdf.Pdf, index: int) -> pikepdf.Page:
        """Copy page ``index`` as it is into ``out``; returns the new page."""
        pdf = self._image_pdf()
        out.pages.append(pdf.pages[index])
        return out.pages[-1]

    def _image_pdf(self) -> pikepdf.Pdf:
        if self._pdf is None:
            self._pdf = pikepdf.open(io.BytesIO(_img2pdf(self.data)))
        return self._pdf

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None


class ImageSource(PageSource):
    """JPEG, PNG (or any single image Pillow opens)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data, 1)

    def pix(self, index: int) -> Pix:
        try:
            return Pix.from_bytes(self.data)
        except TesseractError:
            return pix_from_pil(_open_pil(self.data))


class TiffSource(PageSource):
    def __init__(self, data: bytes) -> None:
        img = _open_pil(data)
        super().__init__(data, getattr(img, "n_frames", 1))

    def pix(self, index: int) -> Pix:
        try:
            return Pix.from_bytes(self.data, tiff_frame=index)
        except TesseractError:
            img = _open_pil(self.data)
            img.seek(index)
            return pix_from_pil(img)


class PdfSource(PageSource):
    """A scanner's PDF: each page is kept as it is (its images still encoded); Tesseract
    reads the page's one image when it fills the page, else the page rasterised."""

    def __init__(self, data: bytes) -> None:
        try:
            pdf = pikepdf.open(io.BytesIO(data))
        except pikepdf.PasswordError:
            raise SourceError("encrypted PDF") from None
        except pikepdf.PdfError as exc:
            raise SourceError(f"corrupt PDF: {exc}") from None
        if pdf.is_encrypted:
            raise SourceError("encrypted PDF")
        super().__init__(data, len(pdf.pages), pdf)

    def _image_pdf(self) -> pikepdf.Pdf:
        assert self._pdf is not None
        return self._pdf

    def pix(self, index: int) -> Pix:
        page = self._image_pdf().pages[index]
        image = _full_page_image(page)
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
            except Exception:  # an encoding Pillow cannot turn into pixels: let pdfium draw it
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
        images = list(page.get_images(recursive=False).items())
    except Exception:
        return None
    if len(images) != 1:
        return None
    obj = images[0][1]
    ops = pikepdf.parse_content_stream(page)
    kinds = [str(op) for _, op in ops]
    if sorted(set(kinds)) != sorted({"q", "Q", "cm", "Do"}) or kinds.count("Do") != 1:
        return None
    cms = [operands for operands, op in ops if str(op) == "cm"]
    if len(cms) != 1:
        return None
    a, b, c, d, e, f = (float(x) for x in cms[0])
    box = [float(x) for x in page.cropbox]
    if b or c or a <= 0 or d <= 0:
        return None
    if abs(e - box[0]) > 1 or abs(f - box[1]) > 1 or abs(a - (box[2] - box[0])) > 1 or abs(
            d - (box[3] - box[1])) > 1:
        return None
    raw = pikepdf.PdfImage(obj)
    dpi = round(raw.width / (a / 72))
    return raw, dpi


def pix_from_pil(img: Any, dpi: int | None = None) -> Pix:
    """A Pillow image as a leptonica one, through uncompressed PNM (no encoding cost);
    transparency is laid on white paper, odd modes become RGB."""
    from PIL import Image

    if dpi is None:
        dpi = round(float(img.info.get("dpi", (0, 0))[0] or 0))
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
    img.save(buf, "PPM")
    pix = Pix.from_bytes(buf.getvalue())
    if dpi:
        pix.set_resolution(dpi, dpi)
    return pix


def _open_pil(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load() if getattr(img, "n_frames", 1) == 1 else None
        return img
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise SourceError(f"undecodable image: {exc}") from None


def _img2pdf(data: bytes) -> bytes:
    """img2pdf keeps the image as it is (JPEG bytes passed through, PNG/TIFF lossless); what
    it refuses (alpha, odd modes) is first laid on white as a lossless PNG/TIFF."""
    import img2pdf

    try:
        return img2pdf.convert(data, rotation=img2pdf.Rotation.ifvalid)
    except Exception:
        return img2pdf.convert(_normalise(data))


def _normalise(data: bytes) -> bytes:
    from PIL import Image

    img = _open_pil(data)
    dpi = img.info.get("dpi", (200, 200))
    frames = []
    try:
        for i in range(getattr(img, "n_frames", 1)):
            img.seek(i)
            frame = img.convert("RGBA")
            paper = Image.new("RGBA", frame.size, (255, 255, 255, 255))
            frames.append(Image.alpha_composite(paper, frame).convert("RGB"))
    except (OSError, ValueError) as exc:
        raise SourceError(f"undecodable image: {exc}") from None
    buf = io.BytesIO()
    frames[0].save(buf, "TIFF", dpi=dpi, compression="tiff_lzw", save_all=len(frames) > 1,
                   append_images=frames[1:])
    return buf.getvalue()
