"""vi-VN formats of the reports, and Vietnamese reasons for the pages not accepted."""

from __future__ import annotations

from datetime import date

import pytest

from consumers import reasons_vi, vi


def test_numbers_and_dates_in_vi_vn() -> None:
    assert vi.num(1234.5, 1) == "1.234,5"
    assert vi.num(1456) == "1.456"
    assert vi.num(-1234567) == "-1.234.567"
    assert vi.num(None) == ""
    assert vi.pct(0.4789) == "47,9 %"
    assert vi.dmy(date(2026, 3, 5)) == "05/03/2026"
    assert vi.money(12345678) == "12.345.678 đồng"


def test_the_long_date_of_a_document_pads_days_and_the_first_two_months() -> None:
    # Nghị định 30/2020, Phụ lục I: days under 10 and months 1 and 2 take a leading zero.
    assert vi.long_date(date(2026, 2, 5)) == "ngày 05 tháng 02 năm 2026"
    assert vi.long_date(date(2026, 3, 15)) == "ngày 15 tháng 3 năm 2026"
    assert vi.long_date(date(2026, 11, 9)) == "ngày 09 tháng 11 năm 2026"


@pytest.mark.parametrize(("n", "text"), [
    (0, "Không"), (5, "Năm"), (15, "Mười lăm"), (21, "Hai mươi mốt"), (24, "Hai mươi tư"),
    (105, "Một trăm lẻ năm"), (1005, "Một nghìn không trăm lẻ năm"),
    (1_250_000, "Một triệu hai trăm năm mươi nghìn"),
    (1_005_000, "Một triệu không trăm lẻ năm nghìn"),
    (3_000_000_000, "Ba tỷ"), (1_000_000_001, "Một tỷ không trăm lẻ một"),
    (2_500_000_000_000, "Hai nghìn năm trăm tỷ"),
    (123_456_789, "Một trăm hai mươi ba triệu bốn trăm năm mươi sáu nghìn bảy trăm tám "
                  "mươi chín"),
])
def test_amounts_in_words(n: int, text: str) -> None:
    assert vi.words(n) == text


@pytest.mark.parametrize(("raw", "sentence", "label"), [
    ("colour: L (required colour)", "ảnh thang xám (yêu cầu ảnh màu)", "không phải ảnh màu"),
    ("skew_deg: 5.2 (required 3.0)", "nghiêng 5,2° (cho phép tối đa 3°)", "trang bị nghiêng"),
    ("skew_deg: -4.25 (required 3.0)", "nghiêng 4,25° (cho phép tối đa 3°)",
     "trang bị nghiêng"),
    ("dpi: 150.0 (required 200)", "độ phân giải 150 dpi, dưới mức tối thiểu 200 dpi",
     "độ phân giải dưới mức tối thiểu"),
    ("dpi: None (required 200)", "ảnh không ghi độ phân giải (yêu cầu tối thiểu 200 dpi)",
     "độ phân giải dưới mức tối thiểu"),
    ("blank: 0.0 (required 1)", "trang trắng (không có dòng chữ hay dấu, chữ ký)",
     "trang trắng"),
    ("brightness: 30.5 (required 40..250)",
     "ảnh quá tối (độ sáng trung bình 30,5, yêu cầu 40–250)", "độ sáng không đạt"),
    ("brightness: 252.1 (required 40..250)",
     "ảnh quá sáng (độ sáng trung bình 252,1, yêu cầu 40–250)", "độ sáng không đạt"),
    ("sharpness: 0.5 (required 0.8)", "ảnh mờ (độ sắc nét 0,5, yêu cầu tối thiểu 0,8)",
     "ảnh mờ"),
    ("size_mm: 100x150 (required 140..440)", "khổ giấy 100 × 150 mm ngoài khoảng 140–440 mm",
     "khổ giấy ngoài khoảng cho phép"),
    ("decode: corrupt: cannot be decoded (OSError: broken data stream)",
     "tệp hỏng, không đọc được ảnh", "không đọc được trang"),
    ("decode: not_scan: PDF page has no scanned image", "trang PDF không có ảnh quét",
     "không đọc được trang"),
    ("decode: encrypted: PDF is encrypted", "tệp PDF có mật khẩu, không đọc được",
     "không đọc được trang"),
    ("sha256: page content differs from the page scanned at the site (changed or replaced "
     "since)", "nội dung trang khác với trang đã quét tại điểm (đã bị thay đổi hoặc thay thế)",
     "nội dung trang đã thay đổi"),
    ("missing_page", "thiếu trang", "thiếu trang"),
    ("missing_document", "thiếu văn bản", "thiếu văn bản"),
    ("duplicate_page_number: 5", "trùng số trang 5", "trùng số trang"),
    ("duplicate_content: same image as 003.tif page 1",
     "trùng ảnh với văn bản 003.tif trang 1", "trùng ảnh"),
    ("page_count: 3 pages, manifest expects 4", "có 3 trang, danh mục hồ sơ ghi 4 trang",
     "số trang khác danh mục hồ sơ"),
    ("too_many_failed_pages: 5 of 8", "5/8 trang không đạt: làm lại cả hồ sơ",
     "quá nhiều trang không đạt"),
    ("ocr_failed: tesseract timeout", "nhận dạng chữ (OCR) thất bại",
     "nhận dạng chữ (OCR) thất bại"),
    ("dpi dưới 200", "dpi dưới 200", "dpi dưới 200"),       # already Vietnamese: as written
    ("gremlins: 3", "lý do khác: gremlins: 3", "lý do khác: gremlins: 3"),  # never dropped
    (None, "không rõ lý do", "không rõ lý do"),
])
def test_reasons_in_vietnamese(raw: str | None, sentence: str, label: str) -> None:
    assert reasons_vi.sentence(raw) == sentence
    assert reasons_vi.label(raw) == label


def test_every_reason_the_verdict_worker_states_has_a_translation() -> None:
    """The kinds streams/verdict.py and streams/qc.py emit (checks, file-level reasons) are
    all in the table: a new kind added there without a Vietnamese wording fails here."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "streams"
    checks = set(re.findall(r'_check\("([a-z_0-9]+)"', (root / "qc.py").read_text()))
    verdict = set(re.findall(r'reason=f?"([a-z_]+)[:"]', (root / "verdict.py").read_text()))
    verdict |= set(re.findall(r'f"([a-z_]+): ', (root / "verdict.py").read_text()))
    assert checks and verdict
    assert checks | verdict <= set(reasons_vi.SENTENCES), (checks | verdict) - set(
        reasons_vi.SENTENCES)
