"""The official form of the reports, without a database: a monthly report built from known rows
is rendered as DOCX (read back with python-docx), PDF (pdftotext) and XLSX (openpyxl), in the
state form (Nghị định 30/2020/NĐ-CP) and the Party form (Hướng dẫn 36-HD/VPTW)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from docx import Document
from docx.document import Document as DocxDocument
from openpyxl import load_workbook

from consumers.monthly import LATE, NO_PLAN, ON_TRACK, MonthlyReport, MonthlyRow
from consumers.monthly_doc import TOTAL_LABEL, UNPLANNED_TOTAL, write_monthly
from consumers.official.form import BLANK_NUMBER
from sohoa.config import IssuerConfig

STATE = IssuerConfig(parent="Ủy ban nhân dân tỉnh Đồng Nai", name="Sở Nội vụ", abbreviation="SNV",
                     place="Đồng Nai", recipients=["Ủy ban nhân dân tỉnh (để báo cáo)",
                                                   "Các huyện, thành phố"],
                     archive="VT, CCVTLT",
                     signer={"authority": "KT. Giám đốc", "title": "Phó Giám đốc",
                             "name": "Nguyễn Văn An"})
PARTY = IssuerConfig(form="party", parent="Tỉnh ủy Đồng Nai", name="Văn phòng",
                     abbreviation="VPTU", number="125", place="Biên Hòa",
                     recipients=["Thường trực Tỉnh ủy (để báo cáo)"],
                     archive="Văn phòng Tỉnh ủy",
                     signer={"authority": "T/L Ban Thường vụ", "title": "Chánh Văn phòng",
                             "name": "Trần Thị Bình"})
DOC_DATE = date(2026, 4, 2)


def _row(unit: str, sid: str, name: str, target: int | None, in_month: int, cum: int,
         assessment: str, **kw) -> MonthlyRow:
    return MonthlyRow(unit=unit, site_id=sid, name=name, contractor="Công ty Số Việt",
                      target_pages=target, in_month=in_month, cumulative=cum,
                      accepted_in_month=in_month // 2, accepted_cumulative=cum // 2,
                      deadline=date(2026, 6, 30) if target else None,
                      planned_to_date=(target or 0) * 0.4 if target else None,
                      forecast=date(2026, 8, 3) if assessment == LATE else None,
                      assessment=assessment, throughput_per_day=120.5,
                      working_days_left=61 if target else None,
                      required_per_day=(target - cum) / 61 if target else None, **kw)


ROWS = [
    _row("Huyện Tân Phú", "xa-phu-lam", "Xã Phú Lâm", 12_000, 1_456, 3_210, LATE),
    _row("Huyện Tân Phú", "xa-phu-binh", "Xã Phú Bình", 5_000, 900, 2_600, ON_TRACK),
    _row("Huyện Định Quán", "xa-la-nga", "Xã La Ngà", 8_000, 700, 3_500, ON_TRACK),
    # Pages from a site the plan does not know: shown apart, never in the total.
    _row("", "xa-long-hung", "xa-long-hung", None, 2_840, 2_840, NO_PLAN),
]


def report() -> MonthlyReport:
    days = [date(2026, 3, 2) + timedelta(days=i) for i in range(120)]
    return MonthlyReport(2026, 3, DOC_DATE, date(2026, 3, 31), list(ROWS), days,
                         [100.0 * i if i < 30 else None for i in range(120)],
                         [90.0 * i for i in range(120)])


def _docx_text(path: Path) -> tuple[list[str], DocxDocument]:
    doc = Document(str(path))
    return [p.text for p in doc.paragraphs], doc


def _cells(table) -> list[list[str]]:
    return [[c.text for c in row.cells] for row in table.rows]


def test_state_form_docx(tmp_path: Path) -> None:
    out = write_monthly(report(), "docx", tmp_path / "m.docx", STATE, DOC_DATE)
    paras, doc = _docx_text(out)
    head = _cells(doc.tables[0])[0]
    left, right = head[0].split("\n"), head[1].split("\n")
    assert left[:2] == ["ỦY BAN NHÂN DÂN TỈNH ĐỒNG NAI", "SỞ NỘI VỤ"]
    assert left[-1] == f"Số: {BLANK_NUMBER}/BC-SNV"   # the văn thư writes the number
    assert right[:2] == ["CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc"]
    assert right[-1] == "Đồng Nai, ngày 02 tháng 4 năm 2026"
    assert "BÁO CÁO" in paras
    assert "Tiến độ số hóa tài liệu lưu trữ tháng 03/2026" in paras
    body = "\n".join(paras)
    # The figures of the plan's sites only: 3 sites, 9.310 of 25.000 pages.
    assert ("Tính đến ngày 31/03/2026, 3 điểm số hóa thuộc 2 đơn vị trong kế hoạch đã số hóa "
            "9.310 trang, đạt 37,2 % chỉ tiêu 25.000 trang") in body
    assert "1 điểm chưa có kế hoạch đã gửi 2.840 trang" in body
    # The at-risk list with the pages per working day the late site needs.
    risk = _cells(doc.tables[1])
    assert risk[0][4] == "Cần đạt (trang/ ngày)"
    assert risk[1][1] == "Xã Phú Lâm (Huyện Tân Phú)"
    assert risk[1][2:5] == ["8.790", "61", "144,1"]
    # Nơi nhận and the signature block.
    recipients, signature = _cells(doc.tables[2])[0]
    assert recipients.split("\n") == ["Nơi nhận:", "- Ủy ban nhân dân tỉnh (để báo cáo);",
                                      "- Các huyện, thành phố;", "- Lưu: VT, CCVTLT."]
    sign = [x for x in signature.split("\n") if x]
    assert sign == ["KT. GIÁM ĐỐC", "PHÓ GIÁM ĐỐC", "Nguyễn Văn An"]
    # Appendix: a landscape section whose table repeats its header row on every page.
    assert len(doc.sections) == 2
    width, height = doc.sections[1].page_width, doc.sections[1].page_height
    assert width is not None and height is not None and width > height
    table = doc.tables[3]
    header_props = table.rows[0]._tr.trPr
    assert header_props is not None and header_props.xpath("./w:tblHeader")
    rows = _cells(table)
    header = rows[0]
    assert "Mã điểm" not in header       # names from the plan, not slugs, in print
    by_label = {r[1]: r for r in rows[1:]}
    total = by_label[TOTAL_LABEL]
    col = {h: i for i, h in enumerate(header)}
    assert total[col["Kế hoạch (trang)"]] == "25.000"
    assert total[col["Lũy kế (trang)"]] == "9.310"
    assert total[col["Tỷ lệ hoàn thành"]] == "37,2 %"
    assert total[col["Đánh giá"]] == "1 điểm chậm tiến độ"
    unplanned = by_label[UNPLANNED_TOTAL]
    assert unplanned[col["Đánh giá"]] == NO_PLAN  # never "đúng tiến độ"
    assert unplanned[col["Kế hoạch (trang)"]] == ""
    assert by_label["Xã Phú Lâm"][col["Hạn hoàn thành"]] == "30/06/2026"
    assert doc.inline_shapes, "the chart is in the appendix"
    assert doc.styles["Normal"].font.name == "Times New Roman"


def test_party_form_docx_and_pdf(tmp_path: Path) -> None:
    out = write_monthly(report(), "docx", tmp_path / "p.docx", PARTY, DOC_DATE)
    paras, doc = _docx_text(out)
    left, right = (x.split("\n") for x in _cells(doc.tables[0])[0])
    assert left == ["TỈNH ỦY ĐỒNG NAI", "VĂN PHÒNG", "*", "Số 125-BC/VPTU"]
    assert right[0] == "ĐẢNG CỘNG SẢN VIỆT NAM"
    assert right[-1] == "Biên Hòa, ngày 02 tháng 4 năm 2026"
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" not in "\n".join(paras + right)
    recipients, sign = _cells(doc.tables[2])[0]
    assert recipients.split("\n") == ["Nơi nhận:", "- Thường trực Tỉnh ủy (để báo cáo),",
                                      "- Lưu Văn phòng Tỉnh ủy."]
    assert [x for x in sign.split("\n") if x] == ["T/L BAN THƯỜNG VỤ", "CHÁNH VĂN PHÒNG",
                                                  "Trần Thị Bình"]
    if shutil.which("pdftotext") is None:
        pytest.skip("poppler-utils missing")
    pdf = write_monthly(report(), "pdf", tmp_path / "p.pdf", PARTY, DOC_DATE)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    for needle in ("ĐẢNG CỘNG SẢN VIỆT NAM", "Số 125-BC/VPTU", "T/L BAN THƯỜNG VỤ",
                   "Biên Hòa, ngày 02 tháng 4 năm 2026", "Trần Thị Bình"):
        assert needle in text, needle


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="poppler-utils missing")
def test_state_form_pdf(tmp_path: Path) -> None:
    pdf = write_monthly(report(), "pdf", tmp_path / "m.pdf", STATE, DOC_DATE)
    pages = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                           text=True, check=True).stdout.split("\f")
    first = pages[0]
    for needle in ("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "Độc lập - Tự do - Hạnh phúc",
                   "SỞ NỘI VỤ", "/BC-SNV", "Đồng Nai, ngày 02 tháng 4 năm 2026", "BÁO CÁO",
                   "I. KẾT QUẢ THỰC HIỆN", "9.310 trang", "37,2 %"):
        assert needle in first, needle
    text = "\f".join(pages)
    for needle in ("Nơi nhận:", "- Lưu: VT, CCVTLT.", "KT. GIÁM ĐỐC", "Nguyễn Văn An",
                   "PHỤ LỤC", "TỔNG CỘNG", "Xã Phú Lâm", "144,1"):
        assert needle in text, needle
    assert "xa-phu-lam" not in text      # names, not slugs
    assert "13.5%" not in text and "1,456" not in text
    # Page numbers from the second page, at its top.
    assert pages[1].strip().splitlines()[0].strip() == "2"
    # Every font embedded (a PDF read on a machine without them keeps its diacritics).
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True,
                           check=True).stdout.splitlines()[2:]
    assert fonts and all(line.split()[-5] == "yes" for line in fonts), fonts


def test_xlsx_cells_are_typed_and_printable(tmp_path: Path) -> None:
    out = write_monthly(report(), "xlsx", tmp_path / "m.xlsx", STATE, DOC_DATE)
    wb = load_workbook(out)
    assert wb.sheetnames == ["Văn bản", "Tiến độ", "Điểm chậm tiến độ", "Biểu đồ"]
    text = [c.value for c in wb["Văn bản"]["A"] if c.value]
    assert "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM" in text and "Nơi nhận:" in text
    assert "Nguyễn Văn An" in text
    ws = wb["Tiến độ"]
    header = [c.value for c in ws[5]]
    col = {h: i for i, h in enumerate(header)}
    assert ws.print_title_rows == "$5:$5"
    assert ws.print_area == "'Tiến độ'!$A$1:$N$" + str(ws.max_row)
    assert ws.page_setup.orientation == "landscape" and ws.page_setup.paperSize == 9
    assert ws.page_setup.fitToWidth == 1 and ws.sheet_properties.pageSetUpPr.fitToPage
    rows = {r[2].value: r for r in ws.iter_rows(min_row=6) if r[2].value}
    lam = rows["xa-phu-lam"]
    assert lam[col["Đơn vị / Điểm số hóa"]].value == "Xã Phú Lâm"
    cum = lam[col["Lũy kế (trang)"]]
    assert cum.value == 3_210 and cum.data_type == "n" and cum.number_format == "#,##0"
    share = lam[col["Tỷ lệ hoàn thành"]]
    assert share.value == pytest.approx(3_210 / 12_000) and share.number_format == "0.0%"
    deadline = lam[col["Hạn hoàn thành"]]
    assert deadline.value == datetime(2026, 6, 30) and deadline.number_format == "dd/mm/yyyy"
    total = next(r for r in ws.iter_rows(min_row=6) if r[1].value == TOTAL_LABEL)
    assert total[col["Lũy kế (trang)"]].value == 9_310
    assert total[col["Kế hoạch (trang)"]].value == 25_000
    chart = wb["Biểu đồ"]
    assert chart._charts and isinstance(chart["A2"].value, datetime)
    assert chart["A2"].number_format == "dd/mm/yyyy"
