"""PDF pages for :mod:`sohoa.documents`: opening, the page content digest, the scanned image.

pikepdf (qpdf) is imported by the caller's first use, never at module import: the kernel
must not need it. Nothing here decodes an image except :func:`decode_image`; the digest reads
still-encoded stream bytes, one stream at a time, so memory is bounded by the largest stream,
not by the document.
"""

from __future__ import annotations

import hashlib
import io
import operator
import struct
from decimal import Decimal
from pathlib import Path
from typing import Any, BinaryIO

from sohoa.documents import DIGEST_PREFIX, PDF, Document, DocumentRejected, PageInfo

# Keys that say how an image's bytes become pixels; the rest (metadata, structure, names)
# can change when a document is re-saved without the page changing.
_IMAGE_KEYS = ("/Subtype", "/Width", "/Height", "/BitsPerComponent", "/ColorSpace",
               "/Filter", "/DecodeParms", "/Decode", "/ImageMask", "/Mask", "/SMask",
               "/SMaskInData")
_FORM_KEYS = ("/Subtype", "/BBox", "/Matrix")
_SKIP_IN_STREAMS = frozenset(("/Length", "/Metadata", "/Parent", "/StructParent",
                              "/StructParents", "/PieceInfo", "/LastModified"))
_MAX_DEPTH = 24
_first = operator.itemgetter(0)
_INHERITED = ("/MediaBox", "/CropBox", "/Rotate", "/Resources")


def open_pdf(source: str | BinaryIO) -> Any:
    """The opened document, or :class:`DocumentRejected` (encrypted, corrupt, no pages)."""
    import pikepdf

    try:
        pdf = pikepdf.open(source)
    except pikepdf.PasswordError:
        raise DocumentRejected("encrypted", "PDF is encrypted: it cannot be read without its "
                                            "password, and archives must not be encrypted"
                               ) from None
    except pikepdf.PdfError as exc:
        raise DocumentRejected("corrupt", f"PDF is damaged: {_plain(exc)}") from None
    if pdf.is_encrypted:
        pdf.close()
        raise DocumentRejected("encrypted", "PDF is encrypted (owner password): archives must "
                                            "not be encrypted")
    try:
        n = len(pdf.pages)
    except pikepdf.PdfError as exc:
        pdf.close()
        raise DocumentRejected("corrupt", f"PDF page tree is damaged: {_plain(exc)}") from None
    if n == 0:
        pdf.close()
        raise DocumentRejected("corrupt", "PDF has no pages")
    return pdf


def _plain(exc: BaseException) -> str:
    """qpdf's message without the stream object's repr it puts first for an in-memory file."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith(("stream <", "<")) and ">" in text:
        text = text.split(">", 1)[1].lstrip(" :")
    if text.startswith("(") and "):" in text[:80]:  # "(offset 123): message"
        text = text.split("):", 1)[1].strip()
    return text[:200] or "unreadable structure"


def inherited(page: Any, key: str) -> Any:
    node, depth = page, 0
    while node is not None and depth < _MAX_DEPTH:
        if key in node:
            return node[key]
        node = node.get("/Parent")
        depth += 1
    return None


def page_digest(page: Any) -> str:
    """SHA-256 of the page's content digest encoding, version in :data:`DIGEST_PREFIX`."""
    import pikepdf

    h = hashlib.sha256(DIGEST_PREFIX + b"pdf\x00")
    for key in ("/MediaBox", "/CropBox", "/Rotate"):
        _feed(h, pikepdf.Name(key), ())
        _feed(h, inherited(page, key), ())
    _feed(h, pikepdf.Name("/UserUnit"), ())
    _feed(h, page.get("/UserUnit"), ())
    contents = page.get("/Contents")
    streams = list(contents) if isinstance(contents, pikepdf.Array) else [contents]
    h.update(b"C" + struct.pack(">Q", len(streams)))
    for s in streams:
        _raw(h, s if isinstance(s, pikepdf.Stream) else None)
    _xobjects(h, inherited(page, "/Resources"), (), 0)
    return h.hexdigest()


def _xobjects(h: Any, resources: Any, path: tuple, depth: int) -> None:
    import pikepdf

    xobjs = resources.get("/XObject") if isinstance(resources, pikepdf.Dictionary) else None
    named = sorted(xobjs.items(), key=_first) if isinstance(xobjs, pikepdf.Dictionary) else []
    h.update(b"X" + struct.pack(">Q", len(named)))
    for name, xobj in named:
        _feed(h, pikepdf.Name(name), ())
        _xobject(h, xobj, path, depth)


def _xobject(h: Any, x: Any, path: tuple, depth: int) -> None:
    import pikepdf

    if not isinstance(x, pikepdf.Stream) or depth > _MAX_DEPTH or _id(x) in path:
        h.update(b"?")  # not a stream, or a form drawing itself: counted, not followed
        return
    path = (*path, _id(x))
    subtype = x.get("/Subtype")
    keys = _FORM_KEYS if subtype == "/Form" else _IMAGE_KEYS
    for key in keys:
        if key not in x:
            continue
        _feed(h, pikepdf.Name(key), ())
        value = x[key]
        if key in ("/SMask", "/Mask") and isinstance(value, pikepdf.Stream):
            _xobject(h, value, path, depth + 1)
        else:
            _feed(h, value, path)
    _raw(h, x)
    if subtype == "/Form":
        _xobjects(h, x.get("/Resources"), path, depth + 1)


def _id(obj: Any) -> tuple[int, int]:
    return tuple(obj.objgen) if obj.is_indirect else (0, id(obj))  # type: ignore[return-value]


def _raw(h: Any, stream: Any) -> None:
    if stream is None:
        h.update(b"S" + struct.pack(">q", -1))
        return
    data = stream.read_raw_bytes()
    h.update(b"S" + struct.pack(">q", len(data)))
    h.update(data)


def _feed(h: Any, obj: Any, path: tuple) -> None:
    """A canonical, renumbering-proof encoding: indirect objects are followed, numbers are
    written by value (612 and 612.0 alike), dictionaries by sorted key."""
    import pikepdf

    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int | Decimal | float):
        d = Decimal(obj).normalize() if not isinstance(obj, float) else Decimal(repr(obj))
        text = str(int(d)) if d == d.to_integral_value() else format(d, "f")
        h.update(b"n" + text.encode() + b";")
    elif isinstance(obj, pikepdf.Name):
        _bytes(h, b"/", str(obj).encode())
    elif isinstance(obj, pikepdf.String):
        _bytes(h, b"s", bytes(obj))
    elif isinstance(obj, pikepdf.Array):
        h.update(b"[" + struct.pack(">Q", len(obj)))
        for item in obj:
            _feed(h, item, path)
    elif isinstance(obj, pikepdf.Stream):
        if len(path) > _MAX_DEPTH or _id(obj) in path:
            h.update(b"?")
            return
        _dict(h, obj, (*path, _id(obj)))
        _raw(h, obj)
    elif isinstance(obj, pikepdf.Dictionary):
        if len(path) > _MAX_DEPTH or (obj.is_indirect and _id(obj) in path):
            h.update(b"?")
            return
        _dict(h, obj, (*path, _id(obj)) if obj.is_indirect else path)
    else:  # operators, inline images: not found in the keys we follow
        _bytes(h, b"o", repr(type(obj).__name__).encode())


def _dict(h: Any, d: Any, path: tuple) -> None:
    keys = sorted(set(d.keys()) - _SKIP_IN_STREAMS)
    h.update(b"<" + struct.pack(">Q", len(keys)))
    for k in keys:
        _bytes(h, b"/", k.encode())
        _feed(h, d[k], path)


def _bytes(h: Any, tag: bytes, data: bytes) -> None:
    h.update(tag + struct.pack(">Q", len(data)))
    h.update(data)


# --- the scanned image of a page -----------------------------------------------------------

def images(page: Any) -> list[Any]:
    """Every image XObject the page draws, through form XObjects too."""
    out: list[Any] = []
    _collect(inherited(page, "/Resources"), out, set(), 0)
    return out


def _collect(resources: Any, out: list[Any], seen: set, depth: int) -> None:
    import pikepdf

    if not isinstance(resources, pikepdf.Dictionary) or depth > _MAX_DEPTH:
        return
    xobjs = resources.get("/XObject")
    if not isinstance(xobjs, pikepdf.Dictionary):
        return
    for name in sorted(xobjs.keys()):
        x = xobjs[name]
        if not isinstance(x, pikepdf.Stream) or _id(x) in seen:
            continue
        seen.add(_id(x))
        if x.get("/Subtype") == "/Image":
            out.append(x)
        elif x.get("/Subtype") == "/Form":
            _collect(x.get("/Resources"), out, seen, depth + 1)


def largest_image(page: Any) -> Any | None:
    best, area = None, -1
    for x in images(page):
        w, h = int(x.get("/Width", 0)), int(x.get("/Height", 0))
        if w * h > area:
            best, area = x, w * h
    return best


def page_size_pt(page: Any) -> tuple[float, float] | None:
    """The page's visible size in points as displayed (CropBox, else MediaBox; /Rotate and
    /UserUnit applied)."""
    box = inherited(page, "/CropBox") or inherited(page, "/MediaBox")
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    unit = float(page.get("/UserUnit", 1) or 1)
    w, h = abs(x1 - x0) * unit, abs(y1 - y0) * unit
    if int(inherited(page, "/Rotate") or 0) % 180:
        w, h = h, w
    return (w, h) if w > 0 and h > 0 else None


def image_mode(x: Any) -> str:
    """The colour mode an image's dictionary declares (no decoding)."""
    import pikepdf

    if x.get("/ImageMask") or int(x.get("/BitsPerComponent", 8) or 8) == 1:
        return "1"
    cs = x.get("/ColorSpace")
    if isinstance(cs, pikepdf.Array) and len(cs):
        family = str(cs[0])
        if family == "/ICCBased":
            n = int(cs[1].get("/N", 3))
            return {1: "L", 3: "RGB", 4: "CMYK"}.get(n, "RGB")
        if family == "/Indexed":
            return "P"
        cs = cs[0]
    return {"/DeviceGray": "L", "/CalGray": "L", "/DeviceRGB": "RGB", "/CalRGB": "RGB",
            "/Lab": "LAB", "/DeviceCMYK": "CMYK"}.get(str(cs), "?")


def filters(x: Any) -> str:
    import pikepdf

    f = x.get("/Filter")
    names = [str(v) for v in f] if isinstance(f, pikepdf.Array) else ([str(f)] if f else [])
    return "+".join(n.lstrip("/") for n in names) or "raw"


def decode_image(x: Any) -> Any:
    """The image as Pillow decodes it (JBIG2 through jbig2dec, JPX through OpenJPEG)."""
    import pikepdf
    from pikepdf import PdfImage

    try:
        img = PdfImage(x).as_pil_image()
    except pikepdf.DependencyError as exc:
        raise DocumentRejected("unreadable", f"PDF image needs a decoder that is not "
                                             f"installed ({filters(x)}): {exc}") from None
    except Exception as exc:
        raise DocumentRejected("corrupt", f"PDF image ({filters(x)}) cannot be decoded: "
                                          f"{_plain(exc)}") from None
    return img


# --- one open PDF -----------------------------------------------------------------------------

class PdfDocument(Document):
    media_type = PDF

    def __init__(self, source: Path | bytes) -> None:
        self.pdf = open_pdf(io.BytesIO(source) if isinstance(source, bytes) else str(source))
        self.page_count = len(self.pdf.pages)

    def close(self) -> None:
        self.pdf.close()

    def _page(self, i: int) -> Any:
        return self.pdf.pages[self._index(i)].obj

    def page_sha256(self, i: int) -> str:
        import pikepdf

        try:
            return page_digest(self._page(i))
        except pikepdf.PdfError as exc:
            raise DocumentRejected("corrupt", f"PDF page {i} is damaged: {_plain(exc)}"
                                   ) from None

    def _image(self, i: int) -> tuple[Any, Any]:
        page = self._page(i)
        x = largest_image(page)
        if x is None:
            raise DocumentRejected("not_scan", "PDF page has no scanned image (not a scan: "
                                               "text or drawings only)")
        return page, x

    def page_info(self, i: int) -> PageInfo:
        page, x = self._image(i)
        w, h = int(x.get("/Width", 0)), int(x.get("/Height", 0))
        size = page_size_pt(page)
        dpi = w_mm = h_mm = None
        if size:
            pw, ph = size
            if (w > h) != (pw > ph) and w != h and pw != ph:
                pw, ph = ph, pw  # the image is drawn turned a quarter on the page
            dpi = min(w / (pw / 72), h / (ph / 72)) if w and h else None
            w_mm, h_mm = size[0] / 72 * 25.4, size[1] / 72 * 25.4
        return PageInfo(w, h, dpi, image_mode(x), f"PDF/{filters(x)}", w_mm, h_mm)

    def page_image(self, i: int, draft_px: int | None = None, *,
                   keep_depth: bool = False) -> Any:
        from sohoa.image_pages import to_8bit

        _, x = self._image(i)
        img = decode_image(x)
        w, h = img.size
        if img.format == "JPEG" and draft_px and max(w, h) > 2 * draft_px:
            img.draft(None, (w * draft_px // max(w, h), h * draft_px // max(w, h)))
        try:
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DocumentRejected("corrupt", f"PDF image ({filters(x)}) is damaged: "
                                              f"{_plain(exc)}") from None
        img.format = None  # the page is a PDF page, whatever its image's codec
        return img if keep_depth else to_8bit(img)
