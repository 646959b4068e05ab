"""libtesseract in-process, through its stable C API (``capi.h``), plus the few leptonica
calls that feed it images.

Why not the ``tesseract`` command: an engine that stays loaded OCRs page after page with no
process start, no model load and no image encoding per page. The calls are the ones the
command itself makes (leptonica reads the image, ``SetImage``, ``Recognize``), with the same
page segmentation (``PSM_AUTO``), so the text is the same.

An :class:`Engine` is not thread-safe and is meant to live in one OCR worker process
(``streams.ocr_pool``); a crash inside the library takes that process down, never the caller.
Tesseract's OpenMP threads are set by ``OMP_THREAD_LIMIT``, which must be in the environment
before this module loads the library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

PSM_AUTO = 3  # tesseract's default page segmentation (the command's `--psm 3`)


class TesseractError(RuntimeError):
    """The library refused a call (no language data, unreadable image, renderer failure)."""


def _load(names: tuple[str, ...], sonames: tuple[str, ...]) -> ctypes.CDLL:
    for name in names:
        found = ctypes.util.find_library(name)
        if found:
            return ctypes.CDLL(found)
    for so in sonames:
        try:
            return ctypes.CDLL(so)
        except OSError:
            continue
    raise TesseractError(f"library not found: {' / '.join(sonames)} (install tesseract-ocr)")


_VP = ctypes.c_void_p
_CP = ctypes.c_char_p
_INT = ctypes.c_int


class _Libs:
    """The C functions below as attributes, each with its result and argument types set."""

    if TYPE_CHECKING:  # set by name from the table below, so the checker cannot list them
        def __getattr__(self, name: str) -> Callable[..., Any]: ...

    def __init__(self) -> None:
        t = _load(("tesseract",), ("libtesseract.so.5", "libtesseract.so.4"))
        # leptonica >= 1.83 is libleptonica; before, liblept.
        lp = _load(("leptonica", "lept"), ("libleptonica.so.6", "liblept.so.5"))
        sig = {
            (t, "TessVersion"): (_CP, []),
            (t, "TessBaseAPICreate"): (_VP, []),
            (t, "TessBaseAPIDelete"): (None, [_VP]),
            (t, "TessBaseAPIInit3"): (_INT, [_VP, _CP, _CP]),
            (t, "TessBaseAPIEnd"): (None, [_VP]),
            (t, "TessBaseAPISetPageSegMode"): (None, [_VP, _INT]),
            (t, "TessBaseAPISetVariable"): (_INT, [_VP, _CP, _CP]),
            (t, "TessBaseAPISetImage2"): (None, [_VP, _VP]),
            (t, "TessBaseAPISetSourceResolution"): (None, [_VP, _INT]),
            (t, "TessBaseAPIGetSourceYResolution"): (_INT, [_VP]),
            (t, "TessBaseAPIRecognize"): (_INT, [_VP, _VP]),
            (t, "TessBaseAPIGetUTF8Text"): (_VP, [_VP]),
            (t, "TessBaseAPIGetHOCRText"): (_VP, [_VP, _INT]),
            (t, "TessBaseAPIAllWordConfidences"): (ctypes.POINTER(_INT), [_VP]),
            (t, "TessBaseAPIDetectOrientationScript"): (
                _INT, [_VP, ctypes.POINTER(_INT), ctypes.POINTER(ctypes.c_float),
                       ctypes.POINTER(_CP), ctypes.POINTER(ctypes.c_float)]),
            (t, "TessBaseAPIClear"): (None, [_VP]),
            (t, "TessBaseAPIGetIterator"): (_VP, [_VP]),
            (t, "TessResultIteratorGetPageIterator"): (_VP, [_VP]),
            (t, "TessResultIteratorDelete"): (None, [_VP]),
            (t, "TessPageIteratorNext"): (_INT, [_VP, _INT]),
            (t, "TessPageIteratorBoundingBox"): (
                _INT, [_VP, _INT, ctypes.POINTER(_INT), ctypes.POINTER(_INT),
                       ctypes.POINTER(_INT), ctypes.POINTER(_INT)]),
            (t, "TessDeleteText"): (None, [_VP]),
            (t, "TessDeleteIntArray"): (None, [ctypes.POINTER(_INT)]),
            (lp, "pixReadMem"): (_VP, [_CP, ctypes.c_size_t]),
            (lp, "pixReadMemTiff"): (_VP, [_CP, ctypes.c_size_t, _INT]),
            (lp, "pixDestroy"): (None, [ctypes.POINTER(_VP)]),
            (lp, "pixGetWidth"): (_INT, [_VP]),
            (lp, "pixGetHeight"): (_INT, [_VP]),
            (lp, "pixGetXRes"): (_INT, [_VP]),
            (lp, "pixGetYRes"): (_INT, [_VP]),
            (lp, "pixSetResolution"): (_INT, [_VP, _INT, _INT]),
            (lp, "pixRotateOrth"): (_VP, [_VP, _INT]),
            (lp, "pixBlockconv"): (_VP, [_VP, _INT, _INT]),
            (lp, "pixConvertTo8"): (_VP, [_VP, _INT]),
            (lp, "pixGetDepth"): (_INT, [_VP]),
            (lp, "pixGetColormap"): (_VP, [_VP]),
            (lp, "setMsgSeverity"): (_INT, [_INT]),
        }
        for (lib, name), (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
            setattr(self, name, fn)
        self.setMsgSeverity(5)  # leptonica: errors only (L_SEVERITY_ERROR), no warnings


_LIBS: _Libs | None = None


def libs() -> _Libs:
    global _LIBS
    if _LIBS is None:
        _LIBS = _Libs()
    return _LIBS


def version() -> str:
    return libs().TessVersion().decode()


class Pix:
    """A leptonica image owned by Python (destroyed with :meth:`close`)."""

    def __init__(self, ptr: int | None) -> None:
        if not ptr:
            raise TesseractError("leptonica could not decode the image")
        self.ptr: int | None = ptr

    @classmethod
    def from_bytes(cls, data: bytes, tiff_frame: int | None = None) -> Pix:
        """Decode image file bytes as ``tesseract IMG`` does (``tiff_frame``: 0-based frame
        of a multi-page TIFF)."""
        lib = libs()
        if tiff_frame is None:
            return cls(lib.pixReadMem(data, len(data)))
        return cls(lib.pixReadMemTiff(data, len(data), tiff_frame))

    @classmethod
    def from_pil(cls, img: Any, dpi: int = 0) -> Pix:
        """An 8-bit Pillow image (``Document.page_image``, a rendering) for Tesseract, through
        BMP: leptonica reads that with a copy per row. Transparency is laid on white paper,
        other modes become RGB; ``dpi`` 0 keeps what the image says."""
        from PIL import Image

        if not dpi:
            dpi = round(float((img.info.get("dpi") or (0, 0))[0] or 0))
        if img.mode not in ("1", "L", "RGB"):
            if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P"
                                                     and "transparency" in img.info):
                rgba = img.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(paper, rgba).convert("RGB")
            else:
                img = img.convert("RGB")
        buf = io.BytesIO()
        img.save(buf, "BMP")
        pix = cls.from_bytes(buf.getvalue())
        if dpi:
            pix.set_resolution(dpi, dpi)
        return pix

    @property
    def size(self) -> tuple[int, int]:
        lib = libs()
        return lib.pixGetWidth(self.ptr), lib.pixGetHeight(self.ptr)

    @property
    def resolution(self) -> tuple[int, int]:
        lib = libs()
        return lib.pixGetXRes(self.ptr), lib.pixGetYRes(self.ptr)

    def set_resolution(self, x: int, y: int) -> None:
        libs().pixSetResolution(self.ptr, x, y)

    def rotated(self, quarter_turns_cw: int) -> Pix:
        """A new image turned clockwise by ``quarter_turns_cw`` x 90 degrees."""
        out = Pix(libs().pixRotateOrth(self.ptr, quarter_turns_cw % 4))
        out.set_resolution(*self.resolution)
        return out

    def smoothed(self) -> Pix:
        """A new grey image, each pixel the mean of its 3x3 neighbourhood (colour becomes
        luminance first: Tesseract's recogniser reads grey anyway, and grey costs it less); a
        bilevel image is returned as a copy (nothing to smooth)."""
        lib = libs()
        if lib.pixGetDepth(self.ptr) == 1 and not lib.pixGetColormap(self.ptr):
            return self.rotated(0)
        with Pix(lib.pixConvertTo8(self.ptr, 0)) as grey:
            out = Pix(lib.pixBlockconv(grey.ptr, 1, 1))
        out.set_resolution(*self.resolution)
        return out

    def close(self) -> None:
        if self.ptr:
            ref = _VP(self.ptr)
            libs().pixDestroy(ctypes.byref(ref))
            self.ptr = None

    def __enter__(self) -> Pix:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RIL_TEXTLINE = 2


@dataclass(frozen=True)
class Recognised:
    text: str
    word_confidences: tuple[int, ...]
    sideways: bool = False  # most text lines run up or down the page

    @property
    def mean_confidence(self) -> float | None:
        c = self.word_confidences
        return round(sum(c) / len(c), 2) if c else None


@dataclass(frozen=True)
class Orientation:
    degrees: int        # clockwise rotation that makes the page upright (0, 90, 180, 270)
    confidence: float


class Engine:
    """One initialised Tesseract for one language set (``"vie"``, ``"vie+eng"``)."""

    def __init__(self, languages: str, datapath: str | None = None) -> None:
        lib = libs()
        self.languages = languages
        self.handle = lib.TessBaseAPICreate()
        if lib.TessBaseAPIInit3(self.handle, datapath.encode() if datapath else None,
                                languages.encode()) != 0:
            lib.TessBaseAPIDelete(self.handle)
            self.handle = None
            raise TesseractError(f"tesseract has no language data for {languages!r}")
        if languages != "osd":
            lib.TessBaseAPISetPageSegMode(self.handle, PSM_AUTO)

    def set_variable(self, name: str, value: str) -> None:
        if not libs().TessBaseAPISetVariable(self.handle, name.encode(), value.encode()):
            raise TesseractError(f"unknown tesseract variable {name!r}")

    def recognise(self, pix: Pix) -> Recognised:
        """OCR one page; its results stay in the engine (for :meth:`hocr`) until the next."""
        lib = libs()
        lib.TessBaseAPISetImage2(self.handle, pix.ptr)
        if lib.TessBaseAPIRecognize(self.handle, None) != 0:
            raise TesseractError("tesseract could not recognise the page")
        text = _take_text(lib.TessBaseAPIGetUTF8Text(self.handle))
        confs = lib.TessBaseAPIAllWordConfidences(self.handle)
        values: list[int] = []
        if confs:
            try:
                i = 0
                while confs[i] != -1:
                    values.append(confs[i])
                    i += 1
            finally:
                lib.TessDeleteIntArray(confs)
        return Recognised(text, tuple(values), self._sideways())

    def hocr(self, page_number: int = 0) -> str:
        """The last recognised page as hOCR (words, boxes, confidences, the image's dpi)."""
        return _take_text(libs().TessBaseAPIGetHOCRText(self.handle, page_number))

    def _sideways(self) -> bool:
        """Most text lines taller than wide: the page was scanned on its side (Tesseract
        reads such lines anyway, so the text is right but the page shows sideways)."""
        lib = libs()
        it = lib.TessBaseAPIGetIterator(self.handle)
        if not it:
            return False
        tall = wide = 0
        try:
            page_it = lib.TessResultIteratorGetPageIterator(it)
            box = [_INT() for _ in range(4)]
            while True:
                if lib.TessPageIteratorBoundingBox(page_it, RIL_TEXTLINE,
                                                   *(ctypes.byref(v) for v in box)):
                    w, h = box[2].value - box[0].value, box[3].value - box[1].value
                    if h > 2 * w:
                        tall += 1
                    elif w > 2 * h:
                        wide += 1
                if not lib.TessPageIteratorNext(page_it, RIL_TEXTLINE):
                    break
        finally:
            lib.TessResultIteratorDelete(it)
        return tall > wide

    def orientation(self, pix: Pix) -> Orientation | None:
        """Orientation and script detection (an ``osd`` engine only); None when the page has
        too little text to tell."""
        lib = libs()
        lib.TessBaseAPISetImage2(self.handle, pix.ptr)
        deg, conf, script, sconf = _INT(), ctypes.c_float(), _CP(), ctypes.c_float()
        ok = lib.TessBaseAPIDetectOrientationScript(
            self.handle, ctypes.byref(deg), ctypes.byref(conf), ctypes.byref(script),
            ctypes.byref(sconf))
        lib.TessBaseAPIClear(self.handle)
        if not ok:
            return None
        # orient_deg is the page's orientation counter-clockwise; the clockwise turn that
        # makes it upright is its complement (as `tesseract --psm 0` prints "Rotate:").
        return Orientation((360 - int(deg.value)) % 360, float(conf.value))

    def close(self) -> None:
        if self.handle:
            lib = libs()
            lib.TessBaseAPIEnd(self.handle)
            lib.TessBaseAPIDelete(self.handle)
            self.handle = None


def _take_text(raw: int | None) -> str:
    """A string Tesseract allocated, decoded and freed."""
    if not raw:
        return ""
    try:
        return ctypes.string_at(raw).decode("utf-8", errors="replace")
    finally:
        libs().TessDeleteText(raw)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Tesseract prints notes ("Estimating resolution…") on fd 2; keep them out of logs."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
