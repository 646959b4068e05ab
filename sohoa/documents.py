"""Documents (văn bản) and their pages: what the site agent and the QC workers both read.

A document is one file of a file folder: a JPEG or PNG (one page), a TIFF (one page per
directory of its main chain) or a PDF (its pages). Two sides use it:

- the site agent: :func:`inspect_document` proves a file is complete (structure and
  truncation, never pixels), names its media type, counts its pages from the container and
  computes the whole-file SHA-256 and each page's content digest, reading the file once (a
  PDF twice: once for the file hash, once through qpdf) with bounded memory;
- the workers: :func:`open_document` recomputes a page's digest from the bytes and decodes
  one page at a time (:meth:`Document.page_image`), with its header facts
  (:meth:`Document.page_info`) available without decoding.

The page content digest (page-model.md) is deterministic from the document's bytes alone:
JPEG/PNG: the file's SHA-256; TIFF page i: SHA-256 over ``DIGEST_PREFIX + b"tiff\\0"``, the
canonical encoding of the i-th page directory's defining tags and strip/tile lengths
(:meth:`sohoa.tiff_walk.Directory.canonical_header`) and its strip/tile bytes in order;
PDF page i: see :func:`sohoa.pdf_pages.page_digest`. Change :data:`DIGEST_VERSION` with any
change of encoding: every stored digest would otherwise look like a rescan.

Kernel module: only the standard library at import; Pillow and pikepdf are imported by the
functions that need them.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

DIGEST_VERSION = 1
DIGEST_PREFIX = f"sohoa-page-digest/{DIGEST_VERSION}\x00".encode()

_CHUNK = 1 << 20
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
PDF, TIFF, JPEG, PNG = "application/pdf", "image/tiff", "image/jpeg", "image/png"
UNKNOWN_MEDIA_TYPE = "application/octet-stream"  # a page reference's default (sohoa.events)
_PIL_MEDIA = {"TIFF": TIFF, "JPEG": JPEG, "PNG": PNG, "MPO": JPEG}


class DocumentRejected(Exception):
    """A file that is not a readable document. ``reason`` is the metric label (empty,
    too_large, corrupt, not_image, encrypted, unreadable; for one page of a document also
    not_scan), ``detail`` a sentence for the operator."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DocumentFacts:
    media_type: str
    sha256: str                    # of the whole file
    page_sha256: tuple[str, ...]   # one content digest per page, in page order

    @property
    def pages(self) -> int:
        return len(self.page_sha256)


# --- the agent's side: inspect --------------------------------------------------------------

def inspect_document(f: BinaryIO, size: int) -> DocumentFacts:
    """Check, type, count and hash a document of ``size`` bytes open at offset 0."""
    if size == 0:
        raise DocumentRejected("empty", "file is empty (0 bytes)")
    if size <= _CHUNK:
        # One read serves the structure walk and both hashes (most single pages).
        buf = bytearray(size + 1)  # one byte over: a file that grew is hashed whole
        n = f.readinto(buf)  # type: ignore[attr-defined]
        data = memoryview(buf)[:n]
        return _inspect(_Memory(data), size, f, data)
    return _inspect(_File(f), size, f, None)


class _Memory:
    def __init__(self, data: memoryview) -> None:
        self.data = data

    def read_at(self, offset: int, n: int) -> memoryview:
        return self.data[offset:offset + n]  # a view, no copy: the walks only unpack it


class _File:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def read_at(self, offset: int, n: int) -> bytes:
        self.f.seek(offset)
        return self.f.read(n)


def _inspect(src: _Memory | _File, size: int, f: BinaryIO,
             data: memoryview | None) -> DocumentFacts:
    head = bytes(src.read_at(0, 16))
    try:
        if head.startswith(b"%PDF-"):
            return _inspect_pdf(src, size, f, data)
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            _walk_png(src, size)
            sha = _hash(f, size, data, [])[0]
            return DocumentFacts(PNG, sha, (sha,))
        if head.startswith(b"\xff\xd8\xff"):
            _walk_jpeg(src, size)
            sha = _hash(f, size, data, [])[0]
            return DocumentFacts(JPEG, sha, (sha,))
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return _inspect_tiff(src, size, f, data)
    except struct.error:
        raise DocumentRejected("corrupt", "image header is truncated or damaged") from None
    raise _not_a_scan_format(f, head)


def _not_a_scan_format(f: BinaryIO, head: bytes) -> DocumentRejected:
    """Name what the file is, for the operator, with Pillow's help."""
    if head.startswith(_IMAGE_MAGIC):
        return DocumentRejected("corrupt", "image header is truncated or damaged")
    from PIL import Image, UnidentifiedImageError

    f.seek(0)
    try:
        with Image.open(f) as im:
            fmt = im.format or "?"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return DocumentRejected("not_image", "not an image or PDF (header not recognised)")
    return DocumentRejected("not_image", f"unsupported image format {fmt}")


def _inspect_tiff(src: _Memory | _File, size: int, f: BinaryIO,
                  data: memoryview | None) -> DocumentFacts:
    from sohoa.tiff_walk import TiffDamaged, pages, walk

    try:
        dirs = pages(walk(src.read_at, size))
    except TiffDamaged as exc:
        raise DocumentRejected("corrupt", str(exc)) from None
    if not dirs:
        raise DocumentRejected("corrupt", "TIFF holds only reduced-resolution images")
    digests = [(DIGEST_PREFIX + b"tiff\x00" + d.canonical_header(), d.regions) for d in dirs]
    sha, *pages_sha = _hash(f, size, data, digests)
    return DocumentFacts(TIFF, sha, tuple(pages_sha))


def _inspect_pdf(src: _Memory | _File, size: int, f: BinaryIO,
                 data: memoryview | None) -> DocumentFacts:
    tail = bytes(src.read_at(max(0, size - 2048), 2048))
    if b"%%EOF" not in tail:
        raise DocumentRejected("corrupt", "PDF is truncated (no %%EOF trailer)")
    sha = _hash(f, size, data, [])[0]
    if data is not None:
        source: Any = io.BytesIO(data[:size])
    else:
        f.seek(0)
        source = f
    return DocumentFacts(PDF, sha, tuple(pdf_page_digests(source)))


def pdf_page_digests(source: str | BinaryIO) -> list[str]:
    import pikepdf

    from sohoa.pdf_pages import _plain, open_pdf, page_digest

    with open_pdf(source) as pdf:
        try:
            return [page_digest(p.obj) for p in pdf.pages]
        except (pikepdf.PdfError, ValueError, TypeError, RuntimeError) as exc:
            # qpdf's errors, and values of the wrong type where a page's keys should be
            raise DocumentRejected("corrupt", f"PDF is damaged: {_plain(exc)}") from None


def _hash(f: BinaryIO, size: int, data: memoryview | None,
          pages: list[tuple[bytes, tuple[tuple[int, int], ...]]]) -> list[str]:
    """The file's SHA-256 and each page's (prefix + its regions' bytes), in one read.

    A page whose regions are in file order (as every writer lays them out) is hashed as the
    bytes go by; one whose regions go backwards or overlap is read again on its own."""
    hashers = [hashlib.sha256(prefix) for prefix, _ in pages]
    if data is not None:
        whole = hashlib.sha256(data)
        for h, (_, regions) in zip(hashers, pages, strict=True):
            for off, n in regions:
                h.update(data[off:off + n])
        return [whole.hexdigest(), *(h.hexdigest() for h in hashers)]
    streamed: list[tuple[int, int, int]] = []  # (start, end, page)
    again: list[int] = []
    for k, (_, regions) in enumerate(pages):
        if _in_file_order(regions):
            streamed += [(off, off + n, k) for off, n in regions if n]
        else:
            again.append(k)
    streamed.sort(key=lambda r: r[0])
    whole = hashlib.sha256()
    f.seek(0)
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    pos, nxt, active = 0, 0, []
    while n := f.readinto(buf):  # type: ignore[attr-defined]
        whole.update(view[:n])
        end = pos + n
        while nxt < len(streamed) and streamed[nxt][0] < end:
            active.append(streamed[nxt])
            nxt += 1
        for s, e, k in active:
            a, b = max(s, pos), min(e, end)
            if a < b:
                hashers[k].update(view[a - pos:b - pos])
        active = [r for r in active if r[1] > end]
        pos = end
    for k in again:
        for off, n in pages[k][1]:
            f.seek(off)
            while n > 0 and (chunk := f.read(min(n, _CHUNK))):
                hashers[k].update(chunk)
                n -= len(chunk)
    return [whole.hexdigest(), *(h.hexdigest() for h in hashers)]


def _in_file_order(regions: tuple[tuple[int, int], ...]) -> bool:
    last = 0
    for off, n in regions:
        if off < last:
            return False
        last = off + n
    return True


def _walk_png(src: _Memory | _File, size: int) -> None:
    """Every chunk's length must fit in the file, from IHDR to IEND."""
    pos, first = 8, True
    while True:
        hdr = src.read_at(pos, 8)
        if len(hdr) < 8:
            raise DocumentRejected("corrupt", "PNG is truncated (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", hdr)
        if first and ctype != b"IHDR":
            raise DocumentRejected("corrupt", "PNG does not start with IHDR")
        first = False
        end = pos + 12 + length
        if end > size:
            name = ctype.decode("latin-1") if ctype.isalpha() else "?"
            raise DocumentRejected("corrupt", f"PNG is truncated: chunk {name} ends at byte "
                                              f"{end}, file has {size}")
        if ctype == b"IEND":
            return
        pos = end


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _walk_jpeg(src: _Memory | _File, size: int) -> None:
    """Segments up to the scan must include a frame header; the file must end with EOI."""
    pos, frame = 2, False
    while True:
        marker = src.read_at(pos, 4)
        if len(marker) < 4 or marker[0] != 0xFF:
            raise DocumentRejected("corrupt", "JPEG header is truncated or damaged")
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", marker[2:4])[0]
        if kind in _JPEG_SOF:
            frame = True
        if kind == 0xDA:
            break
        pos += 2 + length
        if pos > size:
            raise DocumentRejected("corrupt", "JPEG header is truncated")
    if not frame:
        raise DocumentRejected("corrupt", "JPEG has no frame header")
    if b"\xff\xd9" not in bytes(src.read_at(max(0, size - 64), 64)):
        raise DocumentRejected("corrupt", "JPEG is truncated (no end-of-image marker)")


def sniff(head: bytes) -> str | None:
    """The media type the first bytes claim, or None."""
    if head.startswith(b"%PDF-"):
        return PDF
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TIFF
    return None


# --- the workers' side: open one page at a time ----------------------------------------------

@dataclass(frozen=True, slots=True)
class PageInfo:
    """A page's header facts, known without decoding its pixels."""

    width_px: int
    height_px: int
    dpi: float | None              # the lower of x/y, None when the file does not say
    mode: str                      # Pillow's mode name, or the one a PDF image declares
    fmt: str                       # e.g. "TIFF/group4", "PDF/JBIG2Decode", "JPEG"
    width_mm: float | None         # physical size as displayed, when known
    height_mm: float | None


class Document:
    """One open document; pages are 1-based. Use as a context manager."""

    media_type: str
    page_count: int

    def page_sha256(self, i: int) -> str:
        raise NotImplementedError

    def page_info(self, i: int) -> PageInfo:
        raise NotImplementedError

    def page_image(self, i: int, draft_px: int | None = None, *,
                   keep_depth: bool = False) -> Any:
        """The page decoded as an 8-bit Pillow image (16-bit samples scaled, not clipped;
        alpha kept). ``draft_px``: the caller needs no more than this on the long side, so a
        JPEG may be decoded at a reduced scale (still at least that size). ``keep_depth``:
        16-bit samples stay 16-bit (a lossless copy of the page, e.g. the OCR output's)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Document:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _index(self, i: int) -> int:
        if not 1 <= i <= self.page_count:
            raise DocumentRejected("not_found", f"page {i} is not in the document "
                                                f"({self.page_count} pages)")
        return i - 1


def open_document(source: Path | bytes, media_type: str | None = None) -> Document:
    """Open a document read-only: a path, or its bytes already read (a worker that proved
    them against the site's hash decodes those very bytes, not the file again).
    ``media_type`` as the agent found it; None, or the contract's "don't know" (a version-1
    event did not say), sniffs."""
    if media_type == UNKNOWN_MEDIA_TYPE:
        media_type = None
    if isinstance(source, bytes):
        head = source[:16]
    else:
        try:
            with open(source, "rb") as f:
                head = f.read(16)
        except FileNotFoundError:
            raise DocumentRejected("unreadable", "file not found (moved or deleted since it "
                                                 "was scanned)") from None
        except OSError as exc:
            raise DocumentRejected("unreadable", f"cannot read: {exc.strerror or 'I/O error'}"
                                   ) from None
    actual = sniff(head)
    if actual is None:
        raise DocumentRejected("not_image", "not an image or PDF (header not recognised)")
    if media_type and media_type != actual:
        raise DocumentRejected("corrupt", f"file is a {actual}, not the {media_type} it was "
                                          f"when scanned")
    if actual == PDF:
        from sohoa.pdf_pages import PdfDocument

        return PdfDocument(source)
    from sohoa.image_pages import ImageDocument

    return ImageDocument(source, actual)


def open_binary(source: Path | bytes) -> BinaryIO:
    """A binary file over a document's path or bytes."""
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")

