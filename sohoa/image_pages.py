"""JPEG, PNG and TIFF documents for :func:`sohoa.documents.open_document`.

Pillow decodes (libtiff for LZW, Deflate, CCITT G4 and JPEG-in-TIFF; libjpeg; zlib). One
Pillow image is kept open per document and moved from page to page, so a 500-page TIFF
never has more than one page decoded.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from sohoa.documents import (
    DIGEST_PREFIX,
    TIFF,
    Document,
    DocumentRejected,
    PageInfo,
    open_binary,
)
from sohoa.hashing import file_sha256

_CHUNK = 1 << 20
# Pillow's modes for samples wider than 8 bits; converting them with Image.convert("L")
# clips everything above 255 to white, so they are scaled here.
_WIDE = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class ImageDocument(Document):
    def __init__(self, source: Path | bytes, media_type: str) -> None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # the QC bounds pixels itself, from page_info
        self.source, self.media_type = source, media_type
        self._pil: Any = None
        self._dirs: list[Any] = []
        if media_type == TIFF:
            from sohoa.tiff_walk import TiffDamaged, pages, walk

            try:
                with open_binary(source) as f:
                    size = f.seek(0, 2)

                    def read_at(off: int, n: int) -> bytes:
                        f.seek(off)
                        return f.read(n)

                    self._dirs = pages(walk(read_at, size))
            except TiffDamaged as exc:
                raise DocumentRejected("corrupt", str(exc)) from None
            except OSError as exc:
                raise DocumentRejected("unreadable", f"cannot read: {exc.strerror}") from None
            if not self._dirs:
                raise DocumentRejected("corrupt", "TIFF holds only reduced-resolution images")
        self.page_count = len(self._dirs) or 1

    def close(self) -> None:
        if self._pil is not None:
            self._pil.close()
            self._pil = None

    def page_sha256(self, i: int) -> str:
        k = self._index(i)
        if self.media_type != TIFF:
            return file_sha256(self.source)
        d = self._dirs[k]
        h = hashlib.sha256(DIGEST_PREFIX + b"tiff\x00" + d.canonical_header())
        with open_binary(self.source) as f:
            for off, n in d.regions:
                f.seek(off)
                while n > 0 and (chunk := f.read(min(n, _CHUNK))):
                    h.update(chunk)
                    n -= len(chunk)
        return h.hexdigest()

    def _frame(self, i: int) -> Any:
        from PIL import Image, UnidentifiedImageError

        k = self._index(i)
        try:
            if self._pil is None:
                # A path: Pillow owns (and closes) the file it opens.
                src = self.source
                self._pil = Image.open(io.BytesIO(src) if isinstance(src, bytes) else src)
            if self._dirs:
                self._pil.seek(self._dirs[k].index)
        except UnidentifiedImageError:
            if self._dirs and _header(self.source) == b"MM\x00+":
                # Pillow reads the BigTIFF version at the wrong byte in big-endian files.
                raise DocumentRejected("unreadable", "big-endian BigTIFF: the image decoder "
                                                     "cannot read it; save it little-endian "
                                                     "(II) or as classic TIFF") from None
            raise DocumentRejected("corrupt", "image cannot be read (damaged header)") from None
        except (OSError, EOFError, SyntaxError, ValueError) as exc:
            raise DocumentRejected("corrupt", f"image cannot be read: {_plain(exc)}") from None
        return self._pil

    def page_info(self, i: int) -> PageInfo:
        img = self._frame(i)
        dpi = pil_dpi(img)
        w, h = img.size
        fmt = img.format or "image"
        if fmt == "TIFF":
            fmt = f"TIFF/{img.info.get('compression', 'raw')}"
        return PageInfo(w, h, dpi, img.mode, fmt,
                        w / dpi * 25.4 if dpi else None, h / dpi * 25.4 if dpi else None)

    def frame_index(self, i: int) -> int:
        """The 0-based directory of page ``i`` in the TIFF's main chain (reduced-resolution
        copies are not pages), as libtiff and leptonica number frames; 0 for JPEG and PNG."""
        return self._dirs[self._index(i)].index if self._dirs else 0

    def page_image(self, i: int, draft_px: int | None = None, *,
                   keep_depth: bool = False) -> Any:
        img = self._frame(i)
        w, h = img.size
        if img.format == "JPEG" and draft_px and max(w, h) > 2 * draft_px:
            longest = max(w, h)
            img.draft(None, (w * draft_px // longest, h * draft_px // longest))
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DocumentRejected("corrupt", f"image data is truncated or damaged: "
                                              f"{_plain(exc)}") from None
        out = img if keep_depth else to_8bit(img)
        if out is img and self.page_count > 1:
            out = img.copy()  # the open image moves on to the next page
        return out


def _header(source: Path | bytes) -> bytes:
    with open_binary(source) as f:
        return f.read(4)


def _plain(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__).replace("\n", " ")


def to_8bit(img: Any) -> Any:
    """8-bit samples: 16-bit grey scaled (>> 8), not clipped at 255."""
    if img.mode not in _WIDE:
        return img
    import numpy as np
    from PIL import Image

    arr = np.asarray(img)
    if img.mode == "I":  # 16-bit PNG samples in a 32-bit container
        arr = np.clip(arr, 0, 65535).astype(np.uint32) // 257
    else:
        arr = arr.astype(np.uint16) >> 8
    return Image.fromarray(arr.astype(np.uint8), "L")


def pil_dpi(img: Any) -> float | None:
    """The lower of the x/y densities the file records, None when it records none."""
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

