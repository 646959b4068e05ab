"""The labelled page set (issue 17 "Proof"): one document per defect, with the verdict each
QC check must give on it.

Every page is made here with real encoders: Pillow (JPEG, PNG, TIFF LZW/Deflate/G4/JPEG,
JPEG 2000), img2pdf, pikepdf, and two streams built by hand because no encoder of them is
packaged: a JBIG2 generic region (MMR-coded, the bytes CCITT G4 coding gives, which T.88
§6.2.6 allows) and an uncompressed 48-bit RGB TIFF. They are decoded by the real decoders
(jbig2dec, OpenJPEG, libtiff) in the test, never here.

``LABELLED`` lists the pages; each entry's ``fails`` are the checks that must fail, every
other check the page gets must pass, and ``reason`` is the decode failure's label for pages
that cannot be decoded at all.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps, TiffImagePlugin

from sohoa.samples import PageSpec, font_path, render_page
from tests.support import pages

SIGNATURE_BLOCK = ("T/L BAN THƯỜNG VỤ", "CHÁNH VĂN PHÒNG")
PIXEL_CHECKS = frozenset({"blank", "brightness", "skew_deg", "sharpness"})


@dataclass(frozen=True)
class Labelled:
    name: str
    make: Callable[[Path], Path]      # writes the document into the folder, returns its path
    fails: frozenset[str] = frozenset()
    reason: str | None = None         # decode failure label (corrupt, encrypted, not_scan)
    absent: frozenset[str] = field(default_factory=frozenset)  # checks that cannot apply


# --- page images --------------------------------------------------------------------------

def _spec(**kw) -> PageSpec:
    return PageSpec(**kw)


def page_image(**kw) -> Image.Image:
    return render_page(_spec(**kw))


def dark() -> Image.Image:
    return page_image().point(lambda v: v // 8)


def light() -> Image.Image:
    # A washed-out scan: paper near white, text a light grey (~27 % contrast).
    return page_image().point(lambda v: round(255 - (255 - v) * 0.3))


def blurred() -> Image.Image:
    return page_image().filter(ImageFilter.GaussianBlur(2.5))


def specks_only(seed: int = 3) -> Image.Image:
    """A blank sheet as scanners see it: dust specks, a few small dirt spots, scanner noise
    and the faint mirrored text of the other side showing through."""
    spec = _spec(blank=True)
    img = render_page(spec)
    w, h = img.size
    back = render_page(_spec(seed=seed)).convert("L").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    back = back.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 255 - (255 - v) * 10 // 100)
    img = Image.composite(Image.new("RGB", img.size, (225, 223, 216)), img,
                          back.point(lambda v: 255 if v < 235 else 0))
    draw = ImageDraw.Draw(img)
    rng = random.Random(seed)
    for _ in range(400):  # dust: 1-2 px at 200 dpi (0.1-0.25 mm)
        x, y, r = rng.randrange(w), rng.randrange(h), rng.choice((0, 1))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(40, 40, 40))
    for _ in range(12):  # dirt: up to 0.6 mm
        x, y, r = rng.randrange(w), rng.randrange(h), rng.randrange(2, 5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(60, 55, 50))
    pixels = img.load()
    assert pixels is not None
    for _ in range(int(w * h * 0.002)):  # sensor noise
        g = rng.randrange(0, 256)
        pixels[rng.randrange(w), rng.randrange(h)] = (g, g, g)
    return img


def one_line() -> Image.Image:
    """The last page of a decision: the signature block's two short lines near the bottom,
    nothing else (no stamp, no signature)."""
    img = page_image(blank=True)
    draw = ImageDraw.Draw(img)
    px = round(12 / 72 * 200)
    font = ImageFont.truetype(font_path(), px)
    x, y = img.width // 2, round(img.height * 0.8)
    for line in SIGNATURE_BLOCK:
        draw.text((x, y), line, font=font, fill=(20, 20, 35))
        y += round(px * 1.5)
    return img


# --- encoders -----------------------------------------------------------------------------

def _save(img: Image.Image, path: Path, fmt: str, dpi: float = 200, **kw) -> Path:
    img.save(path, fmt, dpi=(dpi, dpi), **kw)
    return path


def fax_g4(img: Image.Image) -> bytes:
    """T.6 (CCITT G4) coding of a bilevel page, white runs for paper: libtiff's encoder on
    the inverted image saved MinIsBlack, i.e. the bytes a MinIsWhite G4 scan holds."""
    buf = io.BytesIO()
    ImageOps.invert(img.convert("L")).convert("1").save(buf, "TIFF", compression="group4",
                                                        strip_size=1 << 30)
    with Image.open(io.BytesIO(buf.getvalue())) as t:
        assert isinstance(t, TiffImagePlugin.TiffImageFile)
        (off,), (n,) = t.tag_v2[273], t.tag_v2[279]
    return buf.getvalue()[off:off + n]


def jbig2_generic_mmr(img: Image.Image) -> bytes:
    """A PDF-embedded JBIG2 stream (T.88 annex D.3: no file header): a page information
    segment, one immediate generic region coded with MMR, an end of page."""
    w, h = img.size

    def segment(number: int, kind: int, payload: bytes) -> bytes:
        # number, flags (type, 1-byte page association), no referred-to segments, page 1
        return struct.pack(">IBBBI", number, kind, 0, 1, len(payload)) + payload

    page_info = struct.pack(">IIIIBH", w, h, 0, 0, 0, 0)
    region_info = struct.pack(">IIIIB", w, h, 0, 0, 0)
    generic = region_info + bytes([0x01]) + fax_g4(img)  # flags: MMR = 1
    return segment(0, 48, page_info) + segment(1, 38, generic) + segment(2, 49, b"")


def image_pdf(path: Path, images: list[tuple[Image.Image, float, bytes, dict] | None]) -> Path:
    """A PDF with one page per (image, dpi, encoded stream, image dictionary entries), each
    image filling its page as a scanner's PDF has it; None makes a text-only page."""
    import pikepdf

    pdf = pikepdf.new()
    for item in images:
        if item is None:
            pdf.pages.append(_text_page(pdf))
            continue
        img, dpi, data, entries = item
        w, h = img.size
        pw, ph = w / dpi * 72, h / dpi * 72
        xobj = pikepdf.Stream(pdf, data)
        xobj["/Type"], xobj["/Subtype"] = pikepdf.Name.XObject, pikepdf.Name.Image
        xobj["/Width"], xobj["/Height"] = w, h
        for k, v in entries.items():
            xobj[k] = v
        content = pikepdf.Stream(pdf, f"q {pw:.4f} 0 0 {ph:.4f} 0 0 cm /Im0 Do Q".encode())
        page = pikepdf.Dictionary(
            Type=pikepdf.Name.Page, MediaBox=[0, 0, pw, ph], Contents=content,
            Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=xobj)))
        pdf.pages.append(pikepdf.Page(page))
    pdf.save(path)
    return path


def jbig2_page(img: Image.Image, dpi: float = 200) -> tuple:
    import pikepdf

    return (img, dpi, jbig2_generic_mmr(img), {
        "/ColorSpace": pikepdf.Name.DeviceGray, "/BitsPerComponent": 1,
        "/Filter": pikepdf.Name.JBIG2Decode})


def ccitt_page(img: Image.Image, dpi: float = 200) -> tuple:
    import pikepdf

    w, h = img.size
    return (img, dpi, fax_g4(img), {
        "/ColorSpace": pikepdf.Name.DeviceGray, "/BitsPerComponent": 1,
        "/Filter": pikepdf.Name.CCITTFaxDecode,
        "/DecodeParms": pikepdf.Dictionary(K=-1, Columns=w, Rows=h, BlackIs1=False)})


def flate_page(img: Image.Image, dpi: float = 200) -> tuple:
    import pikepdf

    rgb = img.convert("RGB")
    return (rgb, dpi, zlib.compress(rgb.tobytes(), 6), {
        "/ColorSpace": pikepdf.Name.DeviceRGB, "/BitsPerComponent": 8,
        "/Filter": pikepdf.Name.FlateDecode})


def dct_page(img: Image.Image, dpi: float = 200) -> tuple:
    import pikepdf

    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=88)
    return (img, dpi, buf.getvalue(), {
        "/ColorSpace": pikepdf.Name.DeviceRGB, "/BitsPerComponent": 8,
        "/Filter": pikepdf.Name.DCTDecode})


def jpx_page(img: Image.Image, dpi: float = 200) -> tuple:
    import pikepdf

    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG2000", quality_mode="rates", quality_layers=[20])
    return (img, dpi, buf.getvalue(), {"/Filter": pikepdf.Name.JPXDecode})


def vector_pdf(path: Path) -> Path:
    """A born-digital page: text drawn with a font, no scanned image."""
    return image_pdf(path, [None])


def _text_page(pdf):
    import pikepdf

    font = pikepdf.Dictionary(Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1,
                              BaseFont=pikepdf.Name.Helvetica)
    text = b"BT /F1 14 Tf 72 760 Td (QUYET DINH ve viec giao dat) Tj ET 72 700 450 0 re S"
    return pikepdf.Page(pikepdf.Dictionary(
        Type=pikepdf.Name.Page, MediaBox=[0, 0, 595, 842], Contents=pikepdf.Stream(pdf, text),
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font))))


def rgb48_tiff(path: Path, img: Image.Image, dpi: int = 200) -> Path:
    """A 16-bit-per-sample RGB TIFF (archival masters): Pillow writes none. Each 8-bit
    sample v becomes v * 257."""
    import numpy as np

    return write_tiff(path, [np.asarray(img.convert("RGB"), dtype=np.uint16) * 257], dpi=dpi)


def write_tiff(path: Path, frames: list, bo: str = "<", big: bool = False, dpi: int = 200,
               strips: int = 1, reverse: bool = False, thumbnail: bool = False) -> Path:
    """An uncompressed TIFF written by hand, so byte order, BigTIFF, strip order and a
    thumbnail directory can be chosen. ``frames``: uint8/uint16 arrays, H x W or H x W x 3,
    one directory each; ``thumbnail`` adds a reduced-resolution directory (NewSubfileType 1)
    after the first page, as some capture software does."""
    import numpy as np

    images = list(frames)
    if thumbnail:
        images.insert(1, np.ascontiguousarray(images[0][::8, ::8]))
    out = bytearray(b"II" if bo == "<" else b"MM")
    out += struct.pack(bo + "HHHQ", 43, 8, 0, 0) if big else struct.pack(bo + "HI", 42, 0)
    link = 8 if big else 4  # where the first directory's offset is written
    for k, arr in enumerate(images):
        h, w = arr.shape[:2]
        spp = 1 if arr.ndim == 2 else arr.shape[2]
        bits = arr.dtype.itemsize * 8
        raw = arr.astype(arr.dtype.newbyteorder(bo)).tobytes()
        rows = -(-h // strips)
        row_bytes = w * spp * arr.dtype.itemsize
        chunks = [raw[i * rows * row_bytes:(i + 1) * rows * row_bytes] for i in range(strips)]
        offsets = [0] * strips
        for i in (reversed(range(strips)) if reverse else range(strips)):
            offsets[i] = len(out)
            out += chunks[i] + (b"\0" if len(chunks[i]) % 2 else b"")
        long_t = 16 if big else 4
        entries = [(254, 4, [1 if thumbnail and k == 1 else 0]), (256, 4, [w]), (257, 4, [h]),
                   (258, 3, [bits] * spp), (259, 3, [1]), (262, 3, [2 if spp == 3 else 1]),
                   (273, long_t, offsets), (277, 3, [spp]), (278, 4, [rows]),
                   (279, long_t, [len(c) for c in chunks]), (282, 5, [dpi, 1]),
                   (283, 5, [dpi, 1]), (284, 3, [1]), (296, 3, [2])]
        out += b"\0" * (len(out) % 2)
        ifd_at = len(out)
        out[link:link + (8 if big else 4)] = struct.pack(bo + ("Q" if big else "I"), ifd_at)
        count_fmt, inline = ("Q", 8) if big else ("H", 4)
        entry_len = 20 if big else 12
        extra_at = ifd_at + struct.calcsize(count_fmt) + len(entries) * entry_len + inline
        table, extra = bytearray(struct.pack(bo + count_fmt, len(entries))), bytearray()
        for tag, typ, values in entries:
            code = {3: "H", 4: "I", 5: "I", 16: "Q"}[typ]
            payload = struct.pack(f"{bo}{len(values)}{code}", *values)
            count = len(values) // 2 if typ == 5 else len(values)
            if len(payload) <= inline:
                value = payload.ljust(inline, b"\0")
            else:
                value = struct.pack(bo + ("Q" if big else "I"), extra_at + len(extra))
                extra += payload
            table += struct.pack(bo + ("HHQ" if big else "HHI"), tag, typ, count) + value
        link = len(out) + len(table)
        table += b"\0" * inline  # next directory: patched by the following one
        out += table + extra
    path.write_bytes(bytes(out))
    return path


def grey16_png(path: Path, img: Image.Image, dpi: int = 200) -> Path:
    import numpy as np

    arr = np.asarray(img.convert("L"), dtype=np.uint16) * 257
    Image.fromarray(arr).save(path, "PNG", dpi=(dpi, dpi))  # uint16: mode I;16
    return path


def alpha_png(path: Path) -> Path:
    """RGBA with a really transparent border (what a cropping tool leaves)."""
    img = page_image().convert("RGBA")
    a = Image.new("L", img.size, 255)
    ImageDraw.Draw(a).rectangle((0, 0, img.width, 40), fill=0)
    img.putalpha(a)
    return _save(img, path, "PNG")


def half_scale(path: Path) -> Path:
    """An A4 page whose file claims 400 dpi: a 105 x 149 mm "page"."""
    return _save(page_image(), path, "PNG", dpi=400)


# --- the set ------------------------------------------------------------------------------

def _pdf(make_page: Callable[[Image.Image], tuple], img: Callable[[], Image.Image]
         ) -> Callable[[Path], Path]:
    return lambda p: image_pdf(p, [make_page(img())])


def _f(*names: str) -> frozenset[str]:
    return frozenset(names)


LABELLED: list[Labelled] = [
    Labelled("good.jpg", lambda p: _save(page_image(), p, "JPEG", quality=90)),
    Labelled("skewed.png", lambda p: _save(page_image(skew_deg=6.0), p, "PNG"),
             _f("skew_deg")),
    Labelled("blurred.png", lambda p: _save(blurred(), p, "PNG"), _f("sharpness")),
    Labelled("dark.png", lambda p: _save(dark(), p, "PNG"), _f("brightness")),
    Labelled("light.png", lambda p: _save(light(), p, "PNG"), _f("brightness")),
    Labelled("blank.png", lambda p: _save(page_image(blank=True, noise=0.01), p, "PNG"),
             _f("blank"), absent=_f("skew_deg", "sharpness")),
    Labelled("one-line.png", lambda p: _save(one_line(), p, "PNG")),
    Labelled("specks.png", lambda p: _save(specks_only(), p, "PNG"), _f("blank"),
             absent=_f("skew_deg", "sharpness")),
    Labelled("150dpi.png", lambda p: _save(page_image(dpi=150), p, "PNG", dpi=150),
             _f("dpi")),
    Labelled("grey.png", lambda p: _save(page_image(mode="L"), p, "PNG"), _f("colour")),
    Labelled("bilevel.png", lambda p: _save(page_image(mode="1"), p, "PNG"), _f("colour")),
    Labelled("half-scale.png", half_scale, _f("size_mm")),
    Labelled("jbig2.pdf", _pdf(jbig2_page, lambda: page_image(mode="1")), _f("colour")),
    Labelled("ccitt-g4.tif", lambda p: pages.g4_tiff(p), _f("colour")),
    Labelled("ccitt-g4.pdf", _pdf(ccitt_page, lambda: page_image(mode="1")), _f("colour")),
    Labelled("jpeg2000.pdf", _pdf(jpx_page, page_image)),
    Labelled("flate.pdf", _pdf(flate_page, page_image)),
    Labelled("dct.pdf", _pdf(dct_page, page_image)),
    Labelled("cmyk.jpg", lambda p: pages.cmyk_jpeg(p)),
    Labelled("alpha.png", alpha_png),
    Labelled("palette.png", lambda p: pages.palette_png(p)),
    Labelled("lzw.tif", lambda p: _save(page_image(), p, "TIFF", compression="tiff_lzw")),
    Labelled("deflate.tif", lambda p: _save(page_image(), p, "TIFF",
                                            compression="tiff_adobe_deflate")),
    Labelled("jpeg-in.tif", lambda p: _save(page_image(), p, "TIFF", compression="jpeg")),
    Labelled("rgb48.tif", lambda p: rgb48_tiff(p, page_image())),
    Labelled("grey16.png", lambda p: grey16_png(p, page_image()), _f("colour")),
    Labelled("encrypted.pdf", lambda p: pages.encrypted_pdf(p), reason="encrypted"),
    Labelled("vector-only.pdf", vector_pdf, reason="not_scan"),
    Labelled("corrupt.tif", lambda p: pages.corrupt(p), reason="corrupt"),
    Labelled("truncated.jpg", lambda p: pages.truncated(p), reason="corrupt"),
]


def one_pdf(path: Path) -> tuple[Path, list[Labelled]]:
    """Most of the defects as the pages of one PDF (each page its own codec and dpi, a
    text-only page among them): the labels of its pages, in order."""
    by_name = {lab.name: lab for lab in LABELLED}
    plan: list[tuple[str, tuple | None]] = [
        ("good.jpg", dct_page(page_image())),
        ("skewed.png", flate_page(page_image(skew_deg=6.0))),
        ("blurred.png", dct_page(blurred())),
        ("dark.png", flate_page(dark())),
        ("vector-only.pdf", None),
        ("light.png", flate_page(light())),
        ("blank.png", flate_page(page_image(blank=True, noise=0.01))),
        ("one-line.png", jbig2_page(one_line().convert("1"))),
        ("specks.png", dct_page(specks_only())),
        ("150dpi.png", dct_page(page_image(dpi=150), dpi=150)),
        ("half-scale.png", flate_page(page_image(), dpi=400)),
        ("jbig2.pdf", jbig2_page(page_image(mode="1"))),
        ("ccitt-g4.pdf", ccitt_page(page_image(mode="1"))),
        ("jpeg2000.pdf", jpx_page(page_image())),
    ]
    image_pdf(path, [item for _, item in plan])
    labels = [by_name[name] for name, _ in plan]
    # A bilevel page cannot be in colour: the one-line page made bilevel fails colour too.
    labels[7] = Labelled("one-line (bilevel)", labels[7].make, _f("colour"))
    return path, labels


def write_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {lab.name: lab.make(folder / lab.name) for lab in LABELLED}
