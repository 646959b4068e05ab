"""Scanned images as PDF pages, built straight into the output PDF, lossless and cheap.

- A PNG's compressed image data goes in as it is (PDF's Flate with the PNG predictor reads
  it unchanged): no decoding. img2pdf would decode the whole image only to look for an EXIF
  orientation, a quarter of a page's OCR time at 300 dpi.
- Pixels Pillow decoded (a TIFF frame in LZW, which PDF/A does not allow) are deflated once.
JPEG and CCITT G4 stay with img2pdf, which passes their bytes through.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pikepdf
from pikepdf import Name

DEFAULT_DPI = 96.0   # as img2pdf: an image that records no resolution
_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def add_image_page(out: pikepdf.Pdf, image: pikepdf.Stream, width_px: int, height_px: int,
                   dpi: tuple[float, float]) -> pikepdf.Page:
    """A page exactly the image's physical size, drawing only the image."""
    w = width_px * 72.0 / (dpi[0] or DEFAULT_DPI)
    h = height_px * 72.0 / (dpi[1] or DEFAULT_DPI)
    content = out.make_stream(b"q %.4f 0 0 %.4f 0 0 cm /Im0 Do Q" % (w, h))
    page = pikepdf.Dictionary(
        Type=Name.Page, MediaBox=pikepdf.Array([0, 0, w, h]),
        Resources=pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image)),
        Contents=content)
    out.pages.append(pikepdf.Page(page))
    return out.pages[-1]


def png_page(out: pikepdf.Pdf, data: bytes) -> pikepdf.Page | None:
    """The PNG as a page with its compressed data untouched; None when the PNG needs more
    than PDF's Flate predictor gives (interlacing, transparency, EXIF): img2pdf's turn."""
    if not data.startswith(_PNG_SIG):
        return None
    pos, idat, ihdr, plte, icc = 8, [], None, None, None
    dpi = (0.0, 0.0)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"PLTE":
            plte = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"pHYs":
            x, y, unit = struct.unpack(">IIB", body)
            if unit == 1:
                dpi = (x * 0.0254, y * 0.0254)
        elif kind == b"iCCP":
            name_end = body.index(b"\0")
            try:
                icc = zlib.decompress(body[name_end + 2:])
            except zlib.error:
                return None
        elif kind in (b"tRNS", b"eXIf", b"acTL"):
            return None
        elif kind == b"IEND":
            break
    if ihdr is None or not idat:
        return None
    width, height, depth, colour, _, _, interlace = ihdr
    if interlace or colour not in (0, 2, 3) or (colour == 3 and plte is None):
        return None
    colours = 3 if colour == 2 else 1
    space: Any = Name.DeviceRGB if colour == 2 else Name.DeviceGray
    if icc is not None and colour != 3:
        space = _icc(out, icc, colours)
    if colour == 3 and plte is not None:  # (a palette image without PLTE returned above)
        base = _icc(out, icc, 3) if icc is not None else Name.DeviceRGB
        space = pikepdf.Array([Name.Indexed, base, len(plte) // 3 - 1, pikepdf.String(plte)])
    image = out.make_stream(b"".join(idat))
    image.Type, image.Subtype = Name.XObject, Name.Image
    image.Width, image.Height, image.BitsPerComponent = width, height, depth
    image.ColorSpace = space
    image.Filter = Name.FlateDecode
    image.DecodeParms = pikepdf.Dictionary(Predictor=15, Colors=colours,
                                           BitsPerComponent=depth, Columns=width)
    return add_image_page(out, image, width, height, dpi)


def pixels_page(out: pikepdf.Pdf, img: Any) -> pikepdf.Page:
    """A Pillow image as a page, its pixels deflated (lossless). Transparency is laid on white
    paper (it is not part of a scan); unusual modes become RGB."""
    from PIL import Image

    x, y = (float(v) for v in (img.info.get("dpi") or (0.0, 0.0))[:2])
    icc = img.info.get("icc_profile")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)),
                                    rgba).convert("RGB")
        icc = None
    bits, raw = 8, None
    space: Any = None
    if img.mode == "1":
        bits, space = 1, Name.DeviceGray
    elif img.mode == "L":
        space = Name.DeviceGray
    elif img.mode == "RGB":
        space = Name.DeviceRGB
    elif img.mode == "CMYK":
        space = Name.DeviceCMYK
    elif img.mode == "P":
        palette = img.getpalette() or []
        space = pikepdf.Array([Name.Indexed, Name.DeviceRGB, len(palette) // 3 - 1,
                               pikepdf.String(bytes(palette))])
        icc = None
    elif img.mode in ("I;16", "I;16B", "I;16L"):
        bits, space, raw = 16, Name.DeviceGray, img.tobytes("raw", "I;16B")
    else:
        img, space, icc = img.convert("RGB"), Name.DeviceRGB, None
    if icc and not isinstance(space, pikepdf.Array):
        space = _icc(out, icc, {Name.DeviceGray: 1, Name.DeviceRGB: 3}.get(space, 4))
    image = out.make_stream(zlib.compress(raw if raw is not None else img.tobytes(), 6))
    image.Type, image.Subtype = Name.XObject, Name.Image
    image.Width, image.Height, image.BitsPerComponent = img.width, img.height, bits
    image.ColorSpace = space
    image.Filter = Name.FlateDecode
    return add_image_page(out, image, img.width, img.height, (x, y))


def _icc(out: pikepdf.Pdf, profile: bytes, n: int) -> pikepdf.Array:
    stream = out.make_stream(profile)
    stream.N = n
    return pikepdf.Array([Name.ICCBased, stream])
