"""The budget estimate as the document a unit submits (XLSX, DOCX, PDF): the grounds of the
proposal, the volume of work, the basis of the calculation, the summary per unit, and per site
in the appendix with the basis of each figure ("chi tiết về khối lượng công việc, căn cứ đề
xuất, cơ sở tính toán kinh phí")."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from consumers import vi
from consumers.budget import BudgetReport, BudgetRow
from consumers.monthly_doc import ROMAN
from consumers.official import Block, Col, OfficialDoc, Para, Row, RowStyle, Table, write
from consumers.official import form as official_form
from sohoa.config import IssuerConfig

SITE_COLUMNS = [
    Col("STT", "text", 0.55, 6), Col("Đơn vị / Điểm số hóa", "text", 2.0, 30),
    Col("Mã điểm", "text", 1.0, 16, printed=False), Col("Kế hoạch (trang)", "int", 1.0, 12),
    Col("Đã số hóa (trang)", "int", 1.0, 12), Col("Còn lại (trang)", "int", 1.0, 12),
    Col("Khổ A4 trở xuống (trang)", "int", 1.0, 12), Col("Khổ A3 (trang)", "int", 0.9, 12),
    Col("Khổ lớn hơn A3 (trang)", "int", 0.9, 12), Col("Quy đổi A4 (trang A4)", "int", 1.0, 12),
    Col("Thành tiền (đồng)", "money", 1.3, 16), Col("Ngày làm việc còn lại", "int", 0.8, 10),
    Col("Cần đạt (trang/ ngày)", "dec1", 0.9, 10), Col("Cơ sở tính toán", "text", 4.0, 80),
]
UNIT_COLUMNS = [
    Col("STT", "text", 0.55, 6), Col("Đơn vị", "text", 2.4, 30),
    Col("Số điểm", "int", 0.7, 8), Col("Còn lại (trang)", "int", 1.1, 12),
    Col("Quy đổi A4 (trang A4)", "int", 1.1, 12), Col("Kinh phí (đồng)", "money", 1.6, 18),
]


def _amount(rows: list[BudgetRow]) -> int | None:
    values = [r.amount for r in rows]
    return None if any(v is None for v in values) else sum(v or 0 for v in values)


def _sum(label: str, rows: list[BudgetRow], style: RowStyle) -> Row:
    return Row(["", label, "", sum(r.target for r in rows), sum(r.scanned for r in rows),
                sum(r.remaining for r in rows), sum(r.a4 for r in rows),
                sum(r.a3 for r in rows), sum(r.larger for r in rows),
                sum(r.a4_equivalents for r in rows), _amount(rows), None, None, ""], style)


def site_table(rep: BudgetReport) -> Table:
    rows: list[Row] = []
    n = 0
    for gi, (unit, members) in enumerate(rep.units()):
        rows.append(Row([ROMAN[gi] if gi < len(ROMAN) else str(gi + 1), unit], "group"))
        for r in members:
            n += 1
            rows.append(Row([str(n), r.name, r.site_id, r.target, r.scanned, r.remaining, r.a4,
                             r.a3, r.larger, r.a4_equivalents, r.amount, r.working_days_left,
                             r.required_per_day, r.basis]))
        rows.append(_sum(f"Cộng {unit}", members, "subtotal"))
    rows.append(_sum("TỔNG CỘNG", rep.rows, "total"))
    return Table(SITE_COLUMNS, rows, "Dự toán theo điểm",
                 "Dự toán kinh phí theo đơn vị và điểm số hóa", font_pt=8)


def unit_table(rep: BudgetReport) -> Table:
    rows = [Row([str(i), unit, len(m), sum(r.remaining for r in m),
                 sum(r.a4_equivalents for r in m), _amount(m)])
            for i, (unit, m) in enumerate(rep.units(), 1)]
    rows.append(Row(["", "TỔNG CỘNG", len(rep.rows), sum(r.remaining for r in rep.rows),
                     sum(r.a4_equivalents for r in rep.rows), _amount(rep.rows)], "total"))
    return Table(UNIT_COLUMNS, rows, "Tổng hợp", "Tổng hợp kinh phí theo đơn vị", font_pt=10)


def budget_document(rep: BudgetReport, issuer: IssuerConfig,
                    doc_date: date | None = None) -> OfficialDoc:
    remaining = sum(r.remaining for r in rep.rows)
    eq = sum(r.a4_equivalents for r in rep.rows)
    total = _amount(rep.rows)
    unpriced = [r for r in rep.rows if r.amount is None]
    body: list[Block] = [
        Para("I. CĂN CỨ ĐỀ XUẤT", "heading"),
        Para(f"Căn cứ kế hoạch {rep.campaign} ({len(rep.rows)} điểm số hóa thuộc "
             f"{len(rep.units())} đơn vị);", "body"),
        Para(f"Căn cứ khối lượng đã số hóa đến ngày {vi.dmy(rep.as_of)} theo số liệu của hệ "
             "thống sohoa (trang quét đã ghi nhận, không tính trang đã xóa);", "body"),
    ]
    for s in rep.sources:
        body.append(Para(f"Căn cứ {s.replace('HĐ số', 'đơn giá tại Hợp đồng số')};", "body"))
    body += [
        Para("II. KHỐI LƯỢNG CÔNG VIỆC CÒN LẠI", "heading"),
        Para(f"Theo kế hoạch còn {vi.num(remaining)} trang tài liệu chưa số hóa, ước tính "
             f"{vi.num(eq)} trang A4 quy đổi (chi tiết từng điểm tại Phụ lục).", "body"),
        Para("III. CƠ SỞ TÍNH TOÁN KINH PHÍ", "heading"),
        Para("Số trang còn lại của mỗi điểm = số trang kế hoạch − số trang đã số hóa. Khổ tài "
             "liệu của số trang còn lại được ước tính theo tỷ lệ khổ của các trang điểm đó đã "
             "quét (A4 trở xuống, A3, lớn hơn A3); điểm chưa quét đủ trang thì lấy tỷ lệ chung "
             "của toàn kế hoạch. Đây là giả định: khối lượng thực tế theo khổ được xác định khi "
             "nghiệm thu.", "body"),
        Para("Quy đổi trang A4: khổ A4 trở xuống = 1, khổ A3 = 2, khổ lớn hơn = diện tích ÷ "
             "diện tích A4, làm tròn lên. Thành tiền = số trang từng khổ × đơn giá của khổ đó "
             "(khổ lớn hơn A3 tính theo trang A4 quy đổi). Số ngày làm việc còn lại tính đến "
             "hạn của từng điểm, không gồm ngày lễ, Tết, ngày nghỉ bù, có tính ngày làm bù.",
             "body"),
        Para("IV. TỔNG HỢP KINH PHÍ", "heading"),
        unit_table(rep),
    ]
    if total is not None:
        body.append(Para(f"Tổng kinh phí dự toán: {vi.money(total)} (bằng chữ: "
                         f"{vi.money_words(total)}).", "body"))
    if unpriced:
        body.append(Para(f"{len(unpriced)} điểm chưa có đơn giá (nhà thầu chưa có hợp đồng trong "
                         "cấu hình và chưa đặt reports.budget_unit_prices): chưa tính thành "
                         "tiền, tổng kinh phí chưa đầy đủ.", "body"))
    return OfficialDoc(
        heading=official_form.heading(issuer, "BÁO CÁO",
                                      "Dự toán kinh phí số hóa tài liệu lưu trữ",
                                      doc_date or rep.as_of),
        body=body, signatures=[official_form.signer(issuer)],
        recipients=official_form.recipients(issuer),
        appendix=[site_table(rep)],
        appendix_title="PHỤ LỤC\nDự toán kinh phí số hóa theo điểm số hóa",
        as_of=f"Số liệu đến ngày {vi.dmy(rep.as_of)}")


def write_budget(rep: BudgetReport, fmt: str, out: Path, issuer: IssuerConfig | None = None,
                 doc_date: date | None = None) -> Path:
    return write(budget_document(rep, issuer or IssuerConfig(), doc_date), fmt, out)
