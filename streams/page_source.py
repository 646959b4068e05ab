"""The pages of one document as the OCR engine needs them: the image Tesseract reads
(:meth:`PageSource.pix`) and the original page for the output PDF
(:meth:`PageSource.append_page`).

The document is read by :mod:`sohoa.documents`, the one reader of documents: it counts the
pages (a TIFF's reduced-resolution copies are not pages), proves each by its content digest
(:meth:`PageSource.check`) and decodes a page when something here needs its pixels. What this
module adds is what only the engine needs:

- Tesseract reads an image as the ``tesseract`` command does, leptonica decoding the file's
  own bytes (a JPEG or PNG, a TIFF's page by its directory, a scanner PDF page's JPEG); only
  what leptonica cannot read goes through the document's decoder, and a PDF page that is more
  than one scanned image is rendered by pdfium;
- the output page keeps the original image: a JPEG's or a G4 TIFF's bytes and a PNG's
  compressed data pass through, other TIFF pages are deflated losslessly, a PDF page is
  copied as it is, with the invisible text a scanner or an earlier OCR put on it taken out
  (:mod:`streams.pdf_content`); a PDF page showing text of its own is rebuilt from its
  rendering, so that the only text on the output page is ours.
"""

from __future__ import annotations

import io
from typing import Any

import pikepdf

from sohoa.documents import PDF, TIFF, Document, DocumentRejected, open_document
from sohoa.image_pages import ImageDocument
from streams.pdf_content import Drawing, full_page_image, read_page
from streams.pdf_images import pixels_page, png_page
from streams.tesseract import Pix, TesseractError

RASTER_DPI = 300   # a PDF page that is not one image is rendered at this resolution
_PASSTHROUGH_TIFF = {"group3", "group4", "jpeg", "tiff_jpeg"}  # img2pdf copies these bytes


def open_source(data: bytes, media_type: str | None = None) -> PageSource:
    """The document in ``data`` (already proven by its SHA-256); DocumentRejected when it is
    not a readable document, or not the ``media_type`` the site found."""
    doc = open_document(data, media_type or None)
    if doc.media_type == PDF:
        return PdfSource(data, doc)
    assert isinstance(doc, ImageDocument)  # every other type open_document reads is an image
    return ImageSource(data, doc)


class PageSource:
    """One document's pages, 1-based. Pages copied into an output PDF may refer to the PDFs
    this source holds: :meth:`close` only after that output is saved."""

    def __init__(self, data: bytes, doc: Document) -> None:
        self.data = data
        self.doc = doc
        self.page_count = doc.page_count
        self._held: list[pikepdf.Pdf] = []

    def check(self, i: int, sha256: str, proven: str | None = None) -> None:
        """Page ``i`` is in the document and is the page the site hashed, by its content
        digest. ``proven``: the SHA-256 the whole document's bytes were proven by; a page
        whose digest is that one (a JPEG or PNG, a version-1 page) is proven with them."""
        if not 1 <= i <= self.page_count:
            raise DocumentRejected("not_found", f"the document has {self.page_count} page(s)")
        if sha256 != proven and self.doc.page_sha256(i) != sha256:
            raise DocumentRejected("changed", "page content differs from the page scanned "
                                              "at the site (changed or replaced since)")

    def pix(self, i: int) -> Pix:
        """The image of page ``i`` for Tesseract."""
        raise NotImplementedError

    def append_page(self, out: pikepdf.Pdf, i: int) -> pikepdf.Page:
        """Page ``i`` with its original image, added to ``out``; returns it."""
        raise NotImplementedError

    def _copy_first_page(self, out: pikepdf.Pdf, pdf_bytes: bytes) -> pikepdf.Page:
        src = pikepdf.open(io.BytesIO(pdf_bytes))
        self._held.append(src)
        out.pages.append(src.pages[0])
        return out.pages[-1]

    def release(self) -> None:
        """Its pages are in the output: drop what the output does not refer to (an image
        document's bytes and decoder), keep what it does until :meth:`close`."""

    def close(self) -> None:
        for pdf in self._held:
            pdf.close()
        self._held.clear()
        self.doc.close()


class ImageSource(PageSource):
    """JPEG, PNG, TIFF of one or many pages."""

    doc: ImageDocument

    def release(self) -> None:
        self.doc.close()
        self.data = b""

    def pix(self, i: int) -> Pix:
        try:
            if self.doc.media_type == TIFF:
                return Pix.from_bytes(self.data, tiff_frame=self.doc.frame_index(i))
            return Pix.from_bytes(self.data)
        except TesseractError:
            info = self.doc.page_info(i)
            return Pix.from_pil(self.doc.page_image(i), round(info.dpi or 0))

    def append_page(self, out: pikepdf.Pdf, i: int) -> pikepdf.Page:
        if self.doc.media_type != TIFF:
            page = png_page(out, self.data)
            if page is not None:
                return page
            return self._img2pdf(out, self.data, i)
        compression = self.doc.page_info(i).fmt.partition("/")[2]
        if self.page_count == 1 and self.doc.frame_index(i) == 0 and (
                compression in _PASSTHROUGH_TIFF):  # img2pdf's first page is this one
            return self._img2pdf(out, self.data, i)
        frame = self.doc.page_image(i, keep_depth=True)
        if frame.mode == "1":  # bilevel: G4 again (lossless), as archives keep it
            buf = io.BytesIO()
            frame.save(buf, "TIFF", compression="group4", dpi=frame.info.get("dpi", (0, 0)))
            return self._img2pdf(out, buf.getvalue(), i)
        return pixels_page(out, frame)

    def _img2pdf(self, out: pikepdf.Pdf, data: bytes, i: int) -> pikepdf.Page:
        """img2pdf passes a JPEG's (and a G4 TIFF's) bytes through; what it refuses is the
        page's pixels, deflated."""
        import img2pdf

        try:
            pdf_bytes = img2pdf.convert(data, rotation=img2pdf.Rotation.ifvalid)
        except Exception:
            return pixels_page(out, self.doc.page_image(i, keep_depth=True))
        return self._copy_first_page(out, pdf_bytes)


class PdfSource(PageSource):
    """A scanner's PDF: each page is kept as it is (its images still encoded, its invisible
    text taken out); Tesseract reads the page's one image when it fills the page, else the
    page rendered."""

    def __init__(self, data: bytes, doc: Document) -> None:
        super().__init__(data, doc)
        self._pdf: pikepdf.Pdf = doc.pdf  # type: ignore[attr-defined]
        self._drawn: dict[int, Drawing] = {}
        self._rendered: dict[int, Any] = {}

    def release(self) -> None:
        self._drawn.clear()
        self._rendered.clear()

    def _drawing(self, i: int) -> Drawing:
        """What page ``i`` draws, its invisible text taken out (in memory, once: after
        :meth:`check`, which reads the page as the site hashed it)."""
        if i not in self._drawn:
            self._drawn[i] = read_page(self._pdf.pages[i - 1])
        return self._drawn[i]

    def pix(self, i: int) -> Pix:
        d = self._drawing(i)
        if d.seen_text:  # the rendering becomes the page too (append_page)
            return Pix.from_pil(self._render(i, keep=True), RASTER_DPI)
        found = full_page_image(self._pdf.pages[i - 1], d)
        if found is not None:
            image, dpi = found
            if image.get(pikepdf.Name.Filter) == pikepdf.Name.DCTDecode and (
                    pikepdf.Name.Decode not in image):
                try:  # a JPEG as the scanner wrote it: read as the tesseract command would
                    pix = Pix.from_bytes(image.read_raw_bytes())
                    pix.set_resolution(dpi, dpi)
                    return pix
                except TesseractError:
                    pass
            try:  # the page's only image, which the document decodes as its page image
                return Pix.from_pil(self.doc.page_image(i), dpi)
            except DocumentRejected:  # an encoding Pillow cannot turn into pixels
                pass
        return Pix.from_pil(self._render(i), RASTER_DPI)

    def append_page(self, out: pikepdf.Pdf, i: int) -> pikepdf.Page:
        page = self._pdf.pages[i - 1]
        if self._drawing(i).seen_text:
            # Its text is drawn into the rendering Tesseract reads; the page becomes that
            # rendering, shown as the original was (same box, same /Rotate).
            new = pixels_page(out, self._render(i))
            rotate = int(page.obj.get(pikepdf.Name.Rotate, 0) or 0) % 360
            if rotate:
                new.obj.Rotate = rotate
            return new
        out.pages.append(page)
        return out.pages[-1]

    def _render(self, i: int, keep: bool = False) -> Any:
        """Page ``i`` drawn by pdfium at RASTER_DPI, in the page's own (unrotated) space, the
        one the text layer is grafted into. ``keep``: for the next call, which takes it."""
        if i in self._rendered:
            return self._rendered.pop(i)
        import pypdfium2

        doc = pypdfium2.PdfDocument(self.data)
        try:
            page = doc[i - 1]
            # pdfium applies the page's /Rotate; turning back by it draws the page in its own
            # space. It draws no invisible text.
            rotate = int(page.get_rotation())
            bitmap = page.render(scale=RASTER_DPI / 72, rotation=(360 - rotate) % 360,
                                 may_draw_forms=False)
            img = bitmap.to_pil()
        finally:
            doc.close()
        img.info["dpi"] = (RASTER_DPI, RASTER_DPI)
        if keep:
            self._rendered[i] = img
        return img
