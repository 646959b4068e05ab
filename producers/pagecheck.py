"""Is this file a complete page? Header parse, truncation checks and SHA-256, off the event loop.

Only headers and structure are read, never pixels: a scan of 100 MB is checked in milliseconds,
and the hash is the one full read. Originals are opened read-only and never written.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

# Scans of maps and large drawings legitimately exceed Pillow's decompression-bomb guard, and we
# never decode pixels here, so the guard only gets in the way.
Image.MAX_IMAGE_PIXELS = None

_CHUNK = 1 << 20
MEDIA_TYPES = {"TIFF": "image/tiff", "JPEG": "image/jpeg", "PNG": "image/png",
               "MPO": "image/jpeg"}
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
# TIFF tags: strips (offsets, byte counts) and tiles (offsets, byte counts).
_TIFF_PARTS = ((273, 279), (324, 325))


class Rejected(Exception):
    """A file that is not a countable page; ``reason`` is the metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Changed(Exception):
    """The file changed while it was read: it is not stable yet."""


@dataclass(frozen=True, slots=True)
class PageFacts:
    sha256: str
    size: int
    mtime_ns: int
    media_type: str
    page_sha256: tuple[str, ...] = ()  # one content digest per page of the document


def inspect_page(path: Path, size: int, mtime_ns: int, max_bytes: int) -> PageFacts:
    """Check and hash one page that looked stable at (size, mtime_ns)."""
    if size == 0:
        raise Rejected("empty", "file is empty (0 bytes)")
    if size > max_bytes:
        raise Rejected("too_large", f"file is {size} bytes, over the limit of {max_bytes}")
    try:
        # One open for the header walk and the hash; the hash's buffer fits the page (a fresh
        # 1 MB buffer per 100 KB page cost more than the header walk).
        with open(path, "rb") as f:
            media_type = _check_structure(f, size)
            f.seek(0)
            sha = _sha256(f, size)
    except PermissionError as exc:
        raise Rejected("unreadable", f"cannot read: {exc.strerror}") from None
    except FileNotFoundError:
        raise Changed() from None
    except OSError as exc:
        raise Rejected("unreadable", f"read error: {exc}") from None
    _still_as_seen(path, size, mtime_ns)  # changed while it was hashed: not stable yet
    return PageFacts(sha256=sha, size=size, mtime_ns=mtime_ns, media_type=media_type,
                     page_sha256=(sha,))


def inspect_settled(items: list[tuple[Path, int, int]], max_bytes: int,
                    ) -> list[PageFacts | BaseException]:
    """Check a batch of pages whose stability window has passed, one result per item.

    The window's closing stat is taken here, off the event loop: a page whose size or mtime
    moved since it was first seen is :class:`Changed` (not stable yet) and is not read.
    """
    out: list[PageFacts | BaseException] = []
    for path, size, mtime_ns in items:
        try:
            _still_as_seen(path, size, mtime_ns)
            out.append(inspect_page(path, size, mtime_ns, max_bytes))
        except Exception as exc:  # each page's outcome is reported on its own
            out.append(exc)
    return out


def _still_as_seen(path: Path, size: int, mtime_ns: int) -> None:
    """Raise :class:`Changed` unless ``path`` is still the regular file first seen at
    (size, mtime_ns); a file gone is a change too, an unstattable one is rejected."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        raise Changed() from None
    except OSError as exc:
        raise Rejected("unreadable", f"cannot stat: {exc}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size != size or st.st_mtime_ns != mtime_ns:
        raise Changed()


def _sha256(f: BinaryIO, size: int) -> str:
    h = hashlib.sha256()
    # One byte over the expected size, so a page that grew meanwhile is hashed whole in the
    # same loop (and then found changed by the closing stat).
    buf = bytearray(min(_CHUNK, size + 1))
    view = memoryview(buf)
    while n := f.readinto(buf):  # type: ignore[attr-defined]
        h.update(view[:n])
    return h.hexdigest()


def _check_structure(f: BinaryIO, size: int) -> str:
    head = f.read(8)
    if head.startswith(b"%PDF-"):
        f.seek(max(0, size - 2048))
        if b"%%EOF" not in f.read():
            raise Rejected("corrupt", "PDF is truncated (no %%EOF trailer)")
        return "application/pdf"
    # Our own walks of the three scan formats read a few hundred bytes and cost tens of
    # microseconds; Pillow's open costs ten times more and is kept for everything else.
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n"):
            _walk_png(f, size)
            return "image/png"
        if head.startswith(b"\xff\xd8\xff"):
            _walk_jpeg(f, size)
            return "image/jpeg"
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            _walk_tiff(f, size, "<" if head[:2] == b"II" else ">")
            return "image/tiff"
    except struct.error:
        raise Rejected("corrupt", "image header is truncated or damaged") from None
    f.seek(0)
    try:
        im = Image.open(f)
        fmt = im.format or ""
        if fmt not in MEDIA_TYPES:
            raise Rejected("not_image", f"unsupported image format {fmt or '?'}")
        if fmt == "PNG":
            im.verify()  # walks every chunk and checks its CRC: catches truncation
        elif fmt in ("JPEG", "MPO"):
            f.seek(max(0, size - 64))
            if b"\xff\xd9" not in f.read():
                raise Rejected("corrupt", "JPEG is truncated (no end-of-image marker)")
        elif fmt == "TIFF":
            _check_tiff_extent(im, size)
    except UnidentifiedImageError:
        if head.startswith(_IMAGE_MAGIC):
            raise Rejected("corrupt", "image header is truncated or damaged") from None
        raise Rejected("not_image", "not an image or PDF (header not recognised)") from None
    except Rejected:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError) as exc:
        raise Rejected("corrupt", f"image header is damaged: {exc}") from None
    return MEDIA_TYPES[fmt]


def _check_tiff_extent(im: Image.Image, size: int) -> None:
    tags = im.tag_v2  # type: ignore[attr-defined]
    for off_tag, cnt_tag in _TIFF_PARTS:
        offsets, counts = tags.get(off_tag), tags.get(cnt_tag)
        if offsets is None or counts is None:
            continue
        offsets = offsets if isinstance(offsets, tuple) else (offsets,)
        counts = counts if isinstance(counts, tuple) else (counts,)
        end = max((o + c for o, c in zip(offsets, counts, strict=False)), default=0)
        if end > size:
            raise Rejected("corrupt", f"TIFF is truncated: image data ends at byte {end}, "
                                      f"file has {size}")
        return
    raise Rejected("corrupt", "TIFF has no image data offsets")


def _walk_png(f: BinaryIO, size: int) -> None:
    """Every chunk's length must fit in the file, from IHDR to IEND."""
    pos, first = 8, True
    while True:
        f.seek(pos)
        hdr = f.read(8)
        if len(hdr) < 8:
            raise Rejected("corrupt", "PNG is truncated (no IEND chunk)")
        length, ctype = struct.unpack(">I4s", hdr)
        if first and ctype != b"IHDR":
            raise Rejected("corrupt", "PNG does not start with IHDR")
        first = False
        end = pos + 12 + length
        if end > size:
            raise Rejected("corrupt", f"PNG is truncated: chunk {ctype!r} ends at byte {end}, "
                                      f"file has {size}")
        if ctype == b"IEND":
            return
        pos = end


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _walk_jpeg(f: BinaryIO, size: int) -> None:
    """Segments up to the scan must include a frame header; the file must end with EOI."""
    pos, frame = 2, False
    while True:
        f.seek(pos)
        marker = f.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            raise Rejected("corrupt", "JPEG header is truncated or damaged")
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
            raise Rejected("corrupt", "JPEG header is truncated")
    if not frame:
        raise Rejected("corrupt", "JPEG has no frame header")
    f.seek(max(0, size - 64))
    if b"\xff\xd9" not in f.read():
        raise Rejected("corrupt", "JPEG is truncated (no end-of-image marker)")


_TIFF_TYPE_SIZE = {3: ("H", 2), 4: ("I", 4)}


def _walk_tiff(f: BinaryIO, size: int, bo: str) -> None:
    """The first image's strips (or tiles) must lie inside the file."""
    f.seek(4)
    ifd = struct.unpack(bo + "I", f.read(4))[0]
    if ifd < 8 or ifd + 2 > size:
        raise Rejected("corrupt", "TIFF is truncated (first directory outside the file)")
    f.seek(ifd)
    n = struct.unpack(bo + "H", f.read(2))[0]
    raw = f.read(12 * n)
    if len(raw) < 12 * n:
        raise Rejected("corrupt", "TIFF is truncated (directory cut short)")
    tags: dict[int, tuple[int, ...]] = {}
    for i in range(n):
        tag, typ, count, value = struct.unpack(bo + "HHI4s", raw[12 * i:12 * i + 12])
        if tag not in (256, 257, 273, 279, 324, 325) or typ not in _TIFF_TYPE_SIZE:
            continue
        code, width = _TIFF_TYPE_SIZE[typ]
        if count * width <= 4:
            data = value[:count * width]
        else:
            where = struct.unpack(bo + "I", value)[0]
            if where + count * width > size:
                raise Rejected("corrupt", "TIFF is truncated (tag data outside the file)")
            f.seek(where)
            data = f.read(count * width)
        tags[tag] = struct.unpack(bo + code * count, data)
    if 256 not in tags or 257 not in tags:
        raise Rejected("corrupt", "TIFF has no image width/height")
    for off_tag, cnt_tag in _TIFF_PARTS:
        if off_tag in tags and cnt_tag in tags:
            end = max((o + c for o, c in zip(tags[off_tag], tags[cnt_tag], strict=False)),
                      default=0)
            if end > size:
                raise Rejected("corrupt", f"TIFF is truncated: image data ends at byte {end}, "
                                          f"file has {size}")
            return
    raise Rejected("corrupt", "TIFF has no image data offsets")
