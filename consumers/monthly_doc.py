"""The monthly report as the document the office signs (DOCX, PDF, XLSX) and as CSV data.

Body: the figures in a short narrative, the at-risk sites with the pages per working day
each now needs, the signature and Nơi nhận. Appendix (landscape): the table per unit and site
(names from the plan) and the chart.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from consumers import vi
from consumers.cells import cells
from consumers.charts import add_xlsx_chart, chart_png
from consumers.deliverables import SiteDeliverable
from consumers.monthly import DONE, LATE, NO_PLAN, ON_TRACK, MonthlyReport, MonthlyRow, group_status
from consumers.official import Block, Chart, Col, OfficialDoc, Para, Row, Table, write
from consumers.official import form as official_form
from sohoa.config import IssuerConfig

ROMAN = ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X"]
TOTAL_LABEL = "TỔNG CỘNG (các điểm trong kế hoạch)"
UNPLANNED_GROUP = "Các điểm chưa có trong kế hoạch (không tính vào tổng cộng)"
UNPLANNED_TOTAL = "Cộng các điểm chưa có kế hoạch"

COLUMNS = [
    Col("STT", "text", 0.5, 6),
    Col("Đơn vị / Điểm số hóa", "text", 2.6, 34),
    Col("Mã điểm", "text", 1.0, 16, printed=False),
    Col("Nhà thầu", "text", 1.4, 20),
    Col("Kế hoạch (trang)", "int", 1.1, 12),
    Col("Số hóa trong tháng (trang)", "int", 1.1, 12),
    Col("Lũy kế (trang)", "int", 1.1, 12),
    Col("Kế hoạch lũy kế đến kỳ (trang)", "int", 1.1, 12),
    Col("Tỷ lệ hoàn thành", "pct", 0.9, 10),
    Col("Nghiệm thu trong tháng (trang)", "int", 1.1, 12),
    Col("Nghiệm thu lũy kế (trang)", "int", 1.1, 12),
    Col("Hạn hoàn thành", "date", 1.0, 12),
    Col("Dự kiến hoàn thành", "date", 1.0, 12),
    Col("Đánh giá", "text", 1.3, 18),
]

AT_RISK_COLUMNS = [
    Col("STT", "text", 0.5, 6),
    Col("Điểm số hóa (đơn vị)", "text", 2.1, 34),
    Col("Còn lại (trang)", "int", 1.0, 12),
    Col("Ngày làm việc còn lại", "int", 1.0, 12),
    Col("Cần đạt (trang/ ngày)", "dec1", 1.15, 12),
    Col("Đang đạt (trang/ ngày)", "dec1", 1.15, 12),
    Col("Dự kiến hoàn thành", "date", 1.1, 12),
    Col("Hạn hoàn thành", "date", 1.1, 12),
]


def _site_values(stt: str, r: MonthlyRow) -> list:
    name = r.name if r.planned else f"{r.name} (chưa có trong kế hoạch)"
    return [stt, name, r.site_id, r.contractor, r.target_pages, r.in_month, r.cumulative,
            round(r.planned_to_date) if r.planned_to_date is not None else None, r.completion,
            r.accepted_in_month, r.accepted_cumulative, r.deadline,
            r.forecast if r.forecast else ("—" if r.planned else None), r.assessment]


def _sum_values(label: str, rows: list[MonthlyRow], *, planned: bool) -> list:
    target = sum(r.target_pages or 0 for r in rows) if planned else None
    cum = sum(r.cumulative for r in rows)
    to_date = round(sum(r.planned_to_date or 0 for r in rows)) if planned else None
    return ["", label, "", f"{len(rows)} điểm", target, sum(r.in_month for r in rows), cum,
            to_date, cum / target if target else None, sum(r.accepted_in_month for r in rows),
            sum(r.accepted_cumulative for r in rows), None, None, group_status(rows)]


def progress_table(rep: MonthlyReport) -> Table:
    rows: list[Row] = []
    n = 0
    for gi, (unit, members) in enumerate(rep.units()):
        label = ROMAN[gi] if gi < len(ROMAN) else str(gi + 1)
        rows.append(Row([label, unit], "group"))
        for r in members:
            n += 1
            rows.append(Row(_site_values(str(n), r), emphasis=r.assessment == LATE))
        rows.append(Row(_sum_values(f"Cộng {unit}", members, planned=True), "subtotal"))
    rows.append(Row(_sum_values(TOTAL_LABEL, rep.planned_rows, planned=True), "total"))
    notes = []
    if rep.unplanned_rows:
        rows.append(Row(["", UNPLANNED_GROUP], "group"))
        for i, r in enumerate(rep.unplanned_rows, 1):
            rows.append(Row(_site_values(f"({i})", r)))
        rows.append(Row(_sum_values(UNPLANNED_TOTAL, rep.unplanned_rows, planned=False),
                        "subtotal"))
        notes.append("Các điểm chưa có trong kế hoạch đã gửi trang quét nhưng chưa có chỉ tiêu, "
                     "đơn vị và hạn hoàn thành; số liệu của các điểm này không tính vào tổng "
                     "cộng và tỷ lệ hoàn thành.")
    notes.append(f"Tỷ lệ hoàn thành = lũy kế ÷ kế hoạch. Kế hoạch lũy kế đến kỳ: chỉ tiêu chia "
                 f"đều theo ngày làm việc từ ngày bắt đầu đến hạn, tính đến ngày "
                 f"{vi.dmy(rep.as_of)}. Dự kiến hoàn thành: theo số trang bình quân một ngày làm "
                 "việc gần đây (—: chưa đủ số liệu để dự báo); ngày làm việc không gồm ngày lễ, "
                 "Tết, ngày nghỉ bù và có tính ngày làm bù.")
    return Table(COLUMNS, rows, "Tiến độ", f"Tiến độ theo đơn vị và điểm số hóa tháng "
                 f"{rep.month:02d}/{rep.year}", font_pt=9, notes=notes)


DELIVERABLE_COLUMNS = [
    Col("STT", "text", 0.5, 6),
    Col("Điểm số hóa (đơn vị)", "text", 2.4, 34),
    Col("Hồ sơ đã đóng gói", "int", 1.0, 12),
    Col("Hồ sơ đã bàn giao", "int", 1.0, 12),
    Col("Hồ sơ kiểm tra đạt", "int", 1.0, 12),
    Col("Hồ sơ kiểm tra không đạt", "int", 1.0, 12),
    Col("Trang đã đóng gói", "int", 1.0, 12),
    Col("Trang kiểm tra đạt", "int", 1.0, 12),
]


def deliverable_table(rep: MonthlyReport) -> Table:
    """Packaged, handed over and verified files per site (the deliverable's progress)."""
    rows = []
    for i, r in enumerate(rep.rows, 1):
        d = rep.deliverables.get(r.site_id, SiteDeliverable())
        rows.append(Row([str(i), f"{r.name} ({r.unit})" if r.unit else r.name,
                         d.files_packaged, d.files_handed_over, d.files_verified,
                         d.files_verify_failed, d.pages_packaged, d.pages_verified]))
    return Table(DELIVERABLE_COLUMNS, rows, "Bàn giao",
                 "Tình hình đóng gói, bàn giao hồ sơ số hóa cho Lưu trữ lịch sử", font_pt=9)


def at_risk_table(rep: MonthlyReport) -> Table:
    rows = []
    for i, r in enumerate(rep.at_risk(), 1):
        need: object = r.required_per_day
        if need is None:
            need = "quá hạn"
        rows.append(Row([str(i), f"{r.name} ({r.unit})", r.remaining, r.working_days_left,
                         need, r.throughput_per_day, r.forecast or "không dự báo được",
                         r.deadline]))
    return Table(AT_RISK_COLUMNS, rows, "Điểm chậm tiến độ",
                 "Các điểm có nguy cơ chậm tiến độ", font_pt=10,
                 notes=["Cần đạt: số trang còn lại chia cho số ngày làm việc từ "
                        f"{'ngày báo cáo' if rep.as_of >= rep.generated else 'đầu kỳ sau'} "
                        "đến hạn. Đang đạt: bình quân các ngày làm việc gần đây."])


def narrative(rep: MonthlyReport) -> list[Para]:
    planned = rep.planned_rows
    units = rep.units()
    target = sum(r.target_pages or 0 for r in planned)
    cum = sum(r.cumulative for r in planned)
    to_date = round(sum(r.planned_to_date or 0 for r in planned))
    month = f"{rep.month:02d}/{rep.year}"
    counts = {k: sum(1 for r in planned if r.assessment == k) for k in (DONE, ON_TRACK, LATE)}
    gap = cum - to_date
    pace = (f"vượt {vi.num(gap)} trang so với kế hoạch lũy kế đến kỳ ({vi.num(to_date)} trang)"
            if gap >= 0 else
            f"chậm {vi.num(-gap)} trang so với kế hoạch lũy kế đến kỳ ({vi.num(to_date)} trang)")
    out = [Para("I. KẾT QUẢ THỰC HIỆN", "heading")]
    if not planned:
        out.append(Para("Chưa có kế hoạch số hóa nào được nhập (sohoa campaign import).",
                        "body"))
    else:
        out += [
            Para(f"Tính đến ngày {vi.dmy(rep.as_of)}, {len(planned)} điểm số hóa thuộc "
                 f"{len(units)} đơn vị trong kế hoạch đã số hóa {vi.num(cum)} trang, đạt "
                 f"{vi.pct(cum / target if target else None) or '—'} chỉ tiêu "
                 f"{vi.num(target)} trang; {pace}.", "body"),
            Para(f"Trong tháng {month} đã số hóa "
                 f"{vi.num(sum(r.in_month for r in planned))} trang; nghiệm thu "
                 f"{vi.num(sum(r.accepted_in_month for r in planned))} trang, lũy kế nghiệm thu "
                 f"{vi.num(sum(r.accepted_cumulative for r in planned))} trang.", "body"),
            Para(f"Đánh giá: {counts[DONE]} điểm đã hoàn thành, {counts[ON_TRACK]} điểm đúng "
                 f"tiến độ, {counts[LATE]} điểm chậm tiến độ.", "body"),
        ]
    if rep.unplanned_rows:
        extra = sum(r.cumulative for r in rep.unplanned_rows)
        out.append(Para(f"Ngoài kế hoạch, {len(rep.unplanned_rows)} điểm chưa có kế hoạch đã gửi "
                        f"{vi.num(extra)} trang; số liệu này không tính vào tổng cộng. Đề nghị "
                        "bổ sung các điểm này vào kế hoạch.", "body"))
    out.append(Para("II. CÁC ĐIỂM CÓ NGUY CƠ CHẬM TIẾN ĐỘ", "heading"))
    risky = rep.at_risk()
    if risky:
        out.append(Para(f"Có {len(risky)} điểm dự kiến không hoàn thành đúng hạn với tốc độ "
                        "hiện nay; số trang mỗi ngày làm việc cần đạt để kịp hạn như sau:",
                        "body"))
    else:
        out.append(Para("Không có điểm nào có nguy cơ chậm tiến độ.", "body"))
    return out


def proposals(rep: MonthlyReport) -> list[Para]:
    out = [Para("III. ĐỀ XUẤT, KIẾN NGHỊ", "heading")]
    if rep.at_risk():
        out.append(Para("Đề nghị các đơn vị có điểm chậm tiến độ chỉ đạo nhà thầu bố trí thêm "
                        "nhân lực, thiết bị để đạt số trang mỗi ngày cần đạt nêu trên.", "body"))
    else:
        out.append(Para("Đề nghị các đơn vị tiếp tục duy trì tiến độ số hóa theo kế hoạch.",
                        "body"))
    out.append(Para("Chi tiết theo đơn vị và điểm số hóa tại Phụ lục kèm theo.", "body"))
    return out


def monthly_document(rep: MonthlyReport, issuer: IssuerConfig,
                     doc_date: date | None = None) -> OfficialDoc:
    body: list[Block] = [*narrative(rep)]
    if rep.at_risk():
        body.append(at_risk_table(rep))
    body += proposals(rep)
    return OfficialDoc(
        heading=official_form.heading(issuer, "BÁO CÁO", rep.summary, doc_date or rep.generated),
        body=body, signatures=[official_form.signer(issuer)],
        recipients=official_form.recipients(issuer),
        appendix=[progress_table(rep),
                  Chart(chart_png(rep), 25.0, "Biểu đồ lũy kế số hóa so với kế hoạch",
                        add_xlsx_chart(rep)),
                  *([deliverable_table(rep)] if rep.deliverables else [])],
        appendix_title=f"PHỤ LỤC\nTiến độ số hóa tài liệu lưu trữ tháng {rep.month:02d}/"
                       f"{rep.year}",
        as_of=as_of_line(rep))


def as_of_line(rep: MonthlyReport) -> str:
    return f"Số liệu đến ngày {vi.dmy(rep.as_of)}; lập ngày {vi.dmy(rep.generated)}"


def write_monthly(rep: MonthlyReport, fmt: str, out: Path, issuer: IssuerConfig | None = None,
                  doc_date: date | None = None) -> Path:
    if fmt == "csv":
        return _csv(rep, out)
    return write(monthly_document(rep, issuer or IssuerConfig(), doc_date), fmt, out)


def _csv(rep: MonthlyReport, out: Path) -> Path:
    """The table as data: UTF-8 with BOM (Excel on Windows reads Vietnamese only with it),
    numbers and dates in vi-VN text."""
    from consumers.official.model import show

    out.parent.mkdir(parents=True, exist_ok=True)
    table = progress_table(rep)
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cells([rep.title]))
        w.writerow(cells([as_of_line(rep)]))
        w.writerow(cells(c.title for c in table.columns))
        for r in table.rows:
            if r.style == "group":
                w.writerow(cells(r.values))
            else:
                w.writerow(cells(show(v, c.kind) for v, c in zip(r.values, table.columns,
                                                                 strict=True)))
        for note in table.notes:
            w.writerow(cells([note]))
    return out


__all__ = ["NO_PLAN", "monthly_document", "write_monthly"]
