"""The acceptance record as the document both parties sign (DOCX, PDF, XLSX) and as CSV.

Body: the contract and the parties, the accepted volume by size class and in A4 equivalents,
its value at the contract's unit prices (in đồng, and in words), what was not accepted and why,
the conclusion, the signature blocks of Bên B and Bên A. Appendix (landscape): the volume per
site, the accepted files, the pages not accepted with their reasons.
"""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from consumers import vi
from consumers.acceptance import AcceptanceReport, AcceptanceRow, AcceptedFile
from consumers.cells import cells
from consumers.official import Col, OfficialDoc, Para, Row, SignBlock, Table, write
from consumers.official import form as official_form
from consumers.official.model import show
from consumers.page_sizes import SIZE_CLASS_VI, SizeClass, SizeTally
from sohoa.config import IssuerConfig

SIZE_COLS = [Col(f"{SIZE_CLASS_VI[c]} (trang)", "int", 1.0, 12) for c in SizeClass] + [
    Col("Quy đổi A4 (trang A4)", "int", 1.0, 12)]
SITE_COLUMNS = [
    Col("STT", "text", 0.55, 6), Col("Đơn vị", "text", 1.6, 22),
    Col("Điểm số hóa", "text", 1.8, 24), Col("Mã điểm", "text", 1.0, 16, printed=False),
    Col("Hồ sơ nghiệm thu", "int", 0.9, 12), Col("Trang nghiệm thu", "int", 1.0, 12),
    *SIZE_COLS, Col("Số lần yêu cầu quét lại", "int", 0.9, 12),
    Col("Số lần không đạt", "int", 0.9, 12), Col("Lý do (số lần)", "text", 2.4, 50),
]
FILE_COLUMNS = [
    Col("STT", "text", 0.5, 6), Col("Điểm số hóa", "text", 1.8, 24),
    Col("Mã điểm", "text", 1.0, 16, printed=False), Col("Phông", "text", 1.0, 14),
    Col("Mã hồ sơ", "text", 1.4, 18), Col("Văn bản", "int", 0.8, 10),
    Col("Số trang nghiệm thu", "int", 0.9, 12), *SIZE_COLS,
    Col("Ngày nghiệm thu", "date", 1.0, 12),
]
VALUE_COLUMNS = [
    Col("STT", "text", 0.55, 6), Col("Khổ tài liệu", "text", 2.0, 28),
    Col("Số trang", "int", 1.0, 12), Col("Quy đổi (trang A4)", "int", 1.0, 12),
    Col("Đơn vị tính", "text", 1.3, 16), Col("Đơn giá (đồng)", "money", 1.1, 14),
    Col("Thành tiền (đồng)", "money", 1.4, 18),
]
REASON_COLUMNS = [Col("STT", "text", 0.55, 6), Col("Lý do không đạt", "text", 4.0, 50),
                  Col("Số lần", "int", 1.0, 10)]
REFUSED_COLUMNS = [
    Col("STT", "text", 0.5, 6), Col("Điểm số hóa", "text", 1.6, 24),
    Col("Phông", "text", 0.9, 14), Col("Mã hồ sơ", "text", 1.2, 18),
    Col("Văn bản", "text", 1.4, 20), Col("Trang", "int", 0.6, 8),
    Col("Kết luận", "text", 1.0, 14), Col("Lý do", "text", 3.6, 60),
    Col("Ngày", "date", 0.9, 12),
]
VERDICT_VI = {"needs_rescan": "quét lại", "rejected": "không đạt"}


def _sizes(t: SizeTally) -> list[int]:
    return [t.a4, t.a3, t.larger, t.unknown, t.a4_equivalents]


def _site_values(i: int, r: AcceptanceRow) -> list:
    return [str(i), r.unit, r.name, r.site_id, r.files_accepted, r.pages_accepted,
            *_sizes(r.sizes), r.rescan_verdicts, r.rejected_verdicts,
            "; ".join(f"{k} ({v})" for k, v in r.reasons.most_common())]


def _file_values(i: int, f: AcceptedFile, names: dict[str, str]) -> list:
    return [str(i), names.get(f.site_id, f.site_id), f.site_id, f.fonds, f.file_code,
            f.documents, f.pages_accepted, *_sizes(f.sizes), f.day]


def site_table(rep: AcceptanceReport) -> Table:
    rows = [Row(_site_values(i, r)) for i, r in enumerate(rep.rows, 1)]
    rows.append(Row(["", "TỔNG CỘNG", f"{len(rep.rows)} điểm", "",
                     sum(r.files_accepted for r in rep.rows),
                     sum(r.pages_accepted for r in rep.rows), *_sizes(rep.totals()),
                     sum(r.rescan_verdicts for r in rep.rows),
                     sum(r.rejected_verdicts for r in rep.rows), ""], "total"))
    notes = [rep.rule] + ([n] if (n := rep.unknown_note()) else [])
    return Table(SITE_COLUMNS, rows, "Nghiệm thu", "Khối lượng nghiệm thu theo điểm số hóa",
                 font_pt=8.5, notes=notes)


def file_table(rep: AcceptanceReport) -> Table:
    names = {r.site_id: r.name for r in rep.rows}
    return Table(FILE_COLUMNS, [Row(_file_values(i, f, names))
                                for i, f in enumerate(rep.files, 1)],
                 "Hồ sơ nghiệm thu", "Danh sách hồ sơ được nghiệm thu", font_pt=8.5)


def value_table(rep: AcceptanceReport) -> Table | None:
    items = rep.amounts()
    if items is None:
        return None
    rows = [Row([str(i), a.label, a.pages, a.a4_equivalents, a.unit, a.price, a.amount])
            for i, a in enumerate(items, 1)]
    total = sum(a.amount for a in items)
    t = rep.totals()
    rows.append(Row(["", "TỔNG CỘNG", t.pages, t.a4_equivalents, "", None, total], "total"))
    vat = ("Đơn giá đã bao gồm thuế giá trị gia tăng." if rep.contract and
           rep.contract.vat_included else "Đơn giá chưa bao gồm thuế giá trị gia tăng.")
    return Table(VALUE_COLUMNS, rows, "Giá trị", "Giá trị khối lượng nghiệm thu",
                 font_pt=10, notes=[f"Bằng chữ: {vi.money_words(total)}.", vat])


def reason_table(rep: AcceptanceReport) -> Table:
    counts: dict[str, int] = {}
    for r in rep.rows:
        for k, v in r.reasons.items():
            counts[k] = counts.get(k, 0) + v
    rows = [Row([str(i), k, v]) for i, (k, v) in
            enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])), 1)]
    return Table(REASON_COLUMNS, rows, "Lý do không đạt",
                 "Lý do yêu cầu quét lại hoặc không đạt trong kỳ", font_pt=10)


def refused_table(rep: AcceptanceReport) -> Table:
    rows = [Row([str(i), x.site, x.fonds, x.file_code, x.document, x.page,
                 VERDICT_VI.get(x.verdict, x.verdict), x.reason, x.day])
            for i, x in enumerate(rep.refused, 1)]
    return Table(REFUSED_COLUMNS, rows, "Trang không đạt",
                 "Danh sách trang, hồ sơ chưa được nghiệm thu và lý do", font_pt=8.5)


def _parties(rep: AcceptanceReport, issuer: IssuerConfig, doc_date: date) -> list[Para]:
    c = rep.contract
    client = issuer.full_name or issuer.name
    out: list[Para] = []
    if c is not None:
        signed = f" ký {vi.long_date(c.signed)}" if c.signed else ""
        out.append(Para(f"Căn cứ Hợp đồng số {c.number}{signed} về việc {c.name};", "body"))
    else:
        out.append(Para(f"Chưa có hợp đồng của nhà thầu {rep.contractor} trong cấu hình "
                        "(reports.contracts): biên bản chỉ xác nhận khối lượng, chưa có đơn giá "
                        "và thành tiền.", "body"))
    out.append(Para(f"Căn cứ kết quả kiểm tra chất lượng từng trang tài liệu số hóa của hệ thống "
                    f"sohoa {rep.period};", "body"))
    place = issuer.place.strip() or official_form.BLANK_PLACE
    out.append(Para(f"Hôm nay, {vi.long_date(doc_date)}, tại {place}, chúng tôi gồm:", "body"))
    rep_a = (c.client_representative if c and c.client_representative else issuer.signer.name)
    title_a = (c.client_representative_title if c and c.client_representative_title
               else issuer.signer.title)
    out += [Para(f"BÊN A (bên giao): {client}", "heading"),
            Para(f"Đại diện: {rep_a or '……………'}; chức vụ: {title_a.capitalize()}.", "body")]
    legal = (c.legal_name or c.contractor) if c else rep.contractor
    rep_b = c.representative if c else ""
    title_b = c.representative_title if c else "……………"
    out += [Para(f"BÊN B (bên nhận): {legal}", "heading"),
            Para(f"Đại diện: {rep_b or '……………'}; chức vụ: {title_b}.", "body"),
            Para(f"Hai bên thống nhất nghiệm thu khối lượng số hóa tài liệu lưu trữ {rep.period} "
                 "như sau:", "body")]
    return out


def acceptance_document(rep: AcceptanceReport, issuer: IssuerConfig,
                        doc_date: date | None = None) -> OfficialDoc:
    doc_date = doc_date or rep.generated
    t = rep.totals()
    files = sum(r.files_accepted for r in rep.rows)
    body: list = _parties(rep, issuer, doc_date)
    body.append(Para("1. Khối lượng được nghiệm thu", "heading"))
    body.append(Para(f"Bên B đã số hóa và được nghiệm thu {vi.num(files)} hồ sơ gồm "
                     f"{vi.num(t.pages)} trang tài liệu tại {len(rep.rows)} điểm số hóa, quy đổi "
                     f"{vi.num(t.a4_equivalents)} trang A4: khổ A4 trở xuống {vi.num(t.a4)} "
                     f"trang, khổ A3 {vi.num(t.a3)} trang, khổ lớn hơn A3 {vi.num(t.larger)} "
                     f"trang, chưa rõ khổ {vi.num(t.unknown)} trang (chi tiết tại Phụ lục).",
                     "body"))
    body.append(Para(rep.rule, "note"))
    if (note := rep.unknown_note()) is not None:
        body.append(Para(note, "note"))
    value = value_table(rep)
    body.append(Para("2. Giá trị khối lượng nghiệm thu", "heading"))
    if value is not None:
        body.append(value)
    else:
        body.append(Para("Chưa xác định (chưa có đơn giá hợp đồng).", "body"))
    body.append(Para("3. Khối lượng chưa được nghiệm thu", "heading"))
    reasons = reason_table(rep)
    if reasons.rows:
        body.append(Para(f"Trong kỳ có {vi.num(sum(r.rescan_verdicts for r in rep.rows))} lượt "
                         f"yêu cầu quét lại và {vi.num(sum(r.rejected_verdicts for r in rep.rows))}"
                         " lượt không đạt; các trang này chưa được nghiệm thu, lý do như sau "
                         "(danh sách từng trang tại Phụ lục):", "body"))
        body.append(reasons)
    else:
        body.append(Para("Không có trang nào bị yêu cầu quét lại hoặc không đạt trong kỳ.",
                         "body"))
    body.append(Para("4. Kết luận", "heading"))
    total = sum(a.amount for a in rep.amounts() or [])
    worth = (f", giá trị {vi.money(total)} (bằng chữ: {vi.money_words(total)})"
             if rep.contract else "")
    copies = rep.contract.copies if rep.contract else 4
    body.append(Para(f"Bên A nghiệm thu {vi.num(t.pages)} trang ({vi.num(t.a4_equivalents)} "
                     f"trang A4 quy đổi) của {vi.num(files)} hồ sơ{worth}. Biên bản được lập "
                     f"thành {copies:02d} bản có giá trị pháp lý như nhau, mỗi bên giữ "
                     f"{copies // 2:02d} bản.", "body"))
    c = rep.contract
    hint = "(Ký, ghi rõ họ tên, đóng dấu)"
    side_b = SignBlock(["ĐẠI DIỆN BÊN B", (c.representative_title if c else "").upper()],
                       c.representative if c else "", hint)
    title_a = (c.client_representative_title if c and c.client_representative_title
               else issuer.signer.title)
    name_a = (c.client_representative if c and c.client_representative
              else issuer.signer.name)
    side_a = SignBlock(["ĐẠI DIỆN BÊN A", title_a.upper()], name_a, hint)
    for sb in (side_a, side_b):
        sb.lines = [x for x in sb.lines if x]
    summary = f"Nghiệm thu khối lượng số hóa tài liệu lưu trữ {rep.period}"
    if c is not None:
        summary += f" (Hợp đồng số {c.number})"
    return OfficialDoc(
        heading=official_form.heading(issuer, "BIÊN BẢN", summary, doc_date), body=body,
        signatures=[side_b, side_a], recipients=None,
        appendix=[site_table(rep), file_table(rep), refused_table(rep)],
        appendix_title="PHỤ LỤC\nChi tiết khối lượng nghiệm thu", as_of=rep.title)


def write_acceptance(rep: AcceptanceReport, fmt: str, out: Path,
                     issuer: IssuerConfig | None = None, doc_date: date | None = None) -> Path:
    if fmt == "csv":
        return _csv(rep, out)
    return write(acceptance_document(rep, issuer or IssuerConfig(), doc_date), fmt, out)


def _csv(rep: AcceptanceReport, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    t = site_table(rep)
    with out.open("w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cells([rep.title]))
        w.writerow(cells([f"Lập ngày {vi.dmy(rep.generated)}"]))
        w.writerow(cells(c.title for c in t.columns))
        for r in t.rows:
            w.writerow(cells(show(v, c.kind) for v, c in zip(r.values, t.columns, strict=True)))
        for note in t.notes:
            w.writerow(cells([note]))
    return out
