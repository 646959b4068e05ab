"""Rescan and rejection reasons in Vietnamese, for the reports officers sign.

The QC and verdict workers state reasons in a fixed English grammar (``streams/verdict.py``:
``"<check>: <value> (required <threshold>)"``, ``"missing_page"``, ``"page_count: 3 pages,
manifest expects 4"``…). This is the one table that words them for officers: a short label per
kind (for counts) and a sentence with the figures in vi-VN (for the page list). A reason
already in Vietnamese, or of a kind not in the table, is kept as stated, marked as such.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from consumers import vi

# A decode failure names its cause first (sohoa.documents.DocumentRejected.reason).
DECODE = {
    "corrupt": "tệp hỏng, không đọc được ảnh",
    "not_scan": "trang PDF không có ảnh quét",
    "encrypted": "tệp PDF có mật khẩu, không đọc được",
    "empty": "tệp rỗng (0 byte)",
    "not_image": "không phải tệp ảnh hoặc PDF",
    "unreadable": "không đọc được tệp",
    "too_large": "tệp quá lớn",
    "not_found": "trang không có trong văn bản",
}
COLOUR_MODES = {"L": "ảnh thang xám", "1": "ảnh đen trắng (nhị phân)", "P": "ảnh bảng màu",
                "LA": "ảnh thang xám", "I;16": "ảnh thang xám 16 bit", "I": "ảnh thang xám"}

# kind -> (label for counts, sentence from (value, threshold) as stated)
LABELS = {
    "dpi": "độ phân giải dưới mức tối thiểu",
    "colour": "không phải ảnh màu",
    "skew_deg": "trang bị nghiêng",
    "blank": "trang trắng",
    "brightness": "độ sáng không đạt",
    "sharpness": "ảnh mờ",
    "size_mm": "khổ giấy ngoài khoảng cho phép",
    "pixels": "kích thước ảnh không đạt",
    "sha256": "nội dung trang đã thay đổi",
    "decode": "không đọc được trang",
    "missing_page": "thiếu trang",
    "missing_document": "thiếu văn bản",
    "duplicate_page_number": "trùng số trang",
    "duplicate_content": "trùng ảnh",
    "page_count": "số trang khác danh mục hồ sơ",
    "ocr_confidence": "nhận dạng chữ (OCR) kém",
    "empty_file": "hồ sơ không có trang",
    "unreadable": "không đọc được trang nào",
    "too_many_failed_pages": "quá nhiều trang không đạt",
    "ocr_failed": "nhận dạng chữ (OCR) thất bại",
    "ocr_skipped": "chưa nhận dạng chữ (OCR)",
}
_CHECK = re.compile(r"^(?P<kind>[a-z_0-9]+)(?::\s*(?P<value>.*?))?"
                    r"(?:\s*\(required (?P<req>.*)\))?$", re.S)


def _n(text: str | None, *, unsigned: bool = False) -> str:
    """A number as stated ("5.2") in vi-VN ("5,2", at most two decimals); other text
    unchanged."""
    if text is None:
        return ""
    try:
        x = float(text)
    except ValueError:
        return text
    if unsigned:
        x = abs(x)
    out = vi.num(x, 2)
    return out.rstrip("0").rstrip(",") if "," in out else out


def _range(req: str | None) -> str:
    lo, _, hi = (req or "").partition("..")
    return f"{_n(lo)}–{_n(hi)}" if hi else _n(lo)


def _brightness(v: str | None, req: str | None) -> str:
    lo = (req or "").partition("..")[0]
    try:
        dark = float(v or 0) < float(lo)
    except ValueError:
        dark = False
    what = "ảnh quá tối" if dark else "ảnh quá sáng"
    return f"{what} (độ sáng trung bình {_n(v)}, yêu cầu {_range(req)})"


def _decode(v: str | None, _req: str | None) -> str:
    cause = (v or "").split(":", 1)[0].strip()
    return DECODE.get(cause, "không đọc được trang")


def _duplicate_content(v: str | None, _req: str | None) -> str:
    m = re.match(r"same image as (.+) page (\d+)$", v or "")
    return f"trùng ảnh với văn bản {m.group(1)} trang {m.group(2)}" if m else "trùng ảnh"


def _page_count(v: str | None, _req: str | None) -> str:
    m = re.match(r"(\d+) pages?, manifest expects (\d+)", v or "")
    return (f"có {m.group(1)} trang, danh mục hồ sơ ghi {m.group(2)} trang" if m
            else LABELS["page_count"])


def _too_many(v: str | None, _req: str | None) -> str:
    m = re.match(r"(\d+) of (\d+)", v or "")
    return (f"{m.group(1)}/{m.group(2)} trang không đạt: làm lại cả hồ sơ" if m
            else LABELS["too_many_failed_pages"])


def _ocr_confidence(v: str | None, _req: str | None) -> str:
    a, _, b = (v or "").partition("<")
    return f"độ tin cậy nhận dạng chữ (OCR) {_n(a.strip())} dưới mức {_n(b.strip())}"


SENTENCES: dict[str, Callable[[str | None, str | None], str]] = {
    "dpi": lambda v, r: (f"độ phân giải {_n(v)} dpi, dưới mức tối thiểu {_n(r)} dpi"
                         if v not in (None, "None") else
                         f"ảnh không ghi độ phân giải (yêu cầu tối thiểu {_n(r)} dpi)"),
    "colour": lambda v, _r: f"{COLOUR_MODES.get(v or '', f'ảnh {v}')} (yêu cầu ảnh màu)",
    "skew_deg": lambda v, r: f"nghiêng {_n(v, unsigned=True)}° (cho phép tối đa {_n(r)}°)",
    "blank": lambda _v, _r: "trang trắng (không có dòng chữ hay dấu, chữ ký)",
    "brightness": _brightness,
    "sharpness": lambda v, r: f"ảnh mờ (độ sắc nét {_n(v)}, yêu cầu tối thiểu {_n(r)})",
    "size_mm": lambda v, r: (f"khổ giấy {(v or '').replace('x', ' × ')} mm ngoài khoảng "
                             f"{_range(r)} mm" if v not in (None, "None") else
                             "không xác định được khổ giấy (ảnh không ghi độ phân giải)"),
    "pixels": lambda v, r: f"ảnh {_n(v)} megapixel, ngoài giới hạn (tối đa {_n(r)})",
    "sha256": lambda _v, _r: "nội dung trang khác với trang đã quét tại điểm (đã bị thay đổi "
                             "hoặc thay thế)",
    "decode": _decode,
    "missing_page": lambda _v, _r: "thiếu trang",
    "missing_document": lambda _v, _r: "thiếu văn bản",
    "duplicate_page_number": lambda v, _r: f"trùng số trang {v}",
    "duplicate_content": _duplicate_content,
    "page_count": _page_count,
    "ocr_confidence": _ocr_confidence,
    "empty_file": lambda _v, _r: "hồ sơ không có trang nào",
    "unreadable": lambda _v, _r: "không đọc được trang nào của hồ sơ",
    "too_many_failed_pages": _too_many,
    "ocr_failed": lambda _v, _r: "nhận dạng chữ (OCR) thất bại",
    "ocr_skipped": lambda _v, _r: "chưa nhận dạng chữ (OCR) được",
}
OTHER = "lý do khác"


def _parse(reason: str) -> tuple[str, str | None, str | None] | None:
    m = _CHECK.match(reason.strip())
    if not m or m.group("kind") not in SENTENCES:
        return None
    return m.group("kind"), m.group("value"), m.group("req")


def label(reason: str | None) -> str:
    """The kind of a reason, in Vietnamese, for counting ("trang bị nghiêng")."""
    parsed = _parse(reason or "")
    if parsed is None:
        return _as_stated(reason)
    return LABELS[parsed[0]]


def sentence(reason: str | None) -> str:
    """A reason as officers read it, with its figures ("nghiêng 5,2° (cho phép tối đa 3°)")."""
    parsed = _parse(reason or "")
    if parsed is None:
        return _as_stated(reason)
    kind, value, req = parsed
    return SENTENCES[kind](value, req)


def _as_stated(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        return "không rõ lý do"
    # Already Vietnamese (a reason typed by an operator): kept as written.
    if any(ord(c) > 127 for c in text):
        return text
    return f"{OTHER}: {text}"
