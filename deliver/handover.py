"""A hand-over (Art. 17): the packages of one fonds or unit, with the mục lục hồ sơ (XLSX),
the biên bản giao nhận (DOCX and PDF), the list of packages (JSON) and a checksum list
(``SHA256SUMS``, the format ``sha256sum -c`` reads) covering every other file.

    <dir>/<id>/goi/<AIP|SIP>_hoso_<code>.zip
    <dir>/<id>/danh-sach-goi.json
    <dir>/<id>/muc-luc-ho-so.xlsx
    <dir>/<id>/bien-ban-giao-nhan.docx
    <dir>/<id>/bien-ban-giao-nhan.pdf
    <dir>/<id>/SHA256SUMS
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from deliver.facts import FileFacts
from deliver.package import BuiltPackage
from sohoa.config import Settings
from sohoa.hashing import file_sha256
from sohoa.metadata import vn_int

LIST_NAME = "danh-sach-goi.json"
SUMS_NAME = "SHA256SUMS"
CATALOGUE_NAME = "muc-luc-ho-so.xlsx"
MINUTES_DOCX = "bien-ban-giao-nhan.docx"
MINUTES_PDF = "bien-ban-giao-nhan.pdf"
PACKAGES_DIR = "goi"


@dataclass(frozen=True)
class HandoverEntry:
    package: str          # the ZIP's name under goi/
    kind: str
    site_id: str
    fonds: str
    file_code: str
    revision: int
    sha256: str
    size: int
    pages: int
    title: str
    period: str
    retention: str
    sheets: int
    documents: int
    access: str


def entry(pkg: BuiltPackage, f: FileFacts) -> HandoverEntry:
    r = f.record
    assert r is not None
    period = (f"{r.thoi_gian_bat_dau:%d/%m/%Y} - {r.thoi_gian_ket_thuc:%d/%m/%Y}"
              if r.thoi_gian_bat_dau and r.thoi_gian_ket_thuc else "")
    return HandoverEntry(pkg.path.name, pkg.kind, pkg.site_id, pkg.fonds, pkg.file_code,
                         pkg.revision, pkg.sha256, pkg.size, pkg.pages, r.tieu_de or "", period,
                         r.thoi_han_bao_quan or "", r.so_luong_to or 0, len(f.documents),
                         r.che_do_su_dung or "")


def write_documents(root: Path, entries: list[HandoverEntry], settings: Settings,
                    scope: str, at: datetime) -> None:
    """The list, the catalogue, the minutes and last the checksum list."""
    (root / LIST_NAME).write_text(json.dumps(
        {"scope": scope, "created": at.isoformat(timespec="seconds"),
         "packages": [asdict(e) for e in entries]}, ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8")
    _catalogue(root / CATALOGUE_NAME, entries, scope)
    lines = _minutes_lines(entries, settings, scope, at)
    _minutes_docx(root / MINUTES_DOCX, lines, entries)
    _minutes_pdf(root / MINUTES_PDF, lines, entries)
    write_sums(root)


def write_sums(root: Path) -> None:
    rows = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != SUMS_NAME:
            rows.append(f"{file_sha256(p)}  {p.relative_to(root).as_posix()}\n")
    tmp = root / f".{SUMS_NAME}.{os.getpid()}.tmp"
    tmp.write_text("".join(rows), encoding="utf-8")
    os.replace(tmp, root / SUMS_NAME)


_COLUMNS = ("STT", "Phông", "Mã hồ sơ", "Tiêu đề hồ sơ", "Thời gian", "Thời hạn bảo quản",
            "Số văn bản", "Số tờ", "Số trang", "Chế độ sử dụng", "Gói", "SHA-256 của gói")


def _catalogue(path: Path, entries: list[HandoverEntry], scope: str) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    from consumers.cells import cells

    wb = Workbook()
    ws = wb.active
    ws.title = "Mục lục hồ sơ"
    ws.append(cells([f"MỤC LỤC HỒ SƠ GIAO NỘP — {scope}"]))
    ws["A1"].font = Font(bold=True, size=13)
    ws.append(list(_COLUMNS))
    for c in ws[2]:
        c.font = Font(bold=True)
    for i, e in enumerate(entries, 1):
        ws.append(cells([i, e.fonds, e.file_code, e.title, e.period, e.retention, e.documents,
                         e.sheets, e.pages, e.access, e.package, e.sha256]))
    for col, width in zip("ABCDEFGHIJKL", (5, 12, 16, 50, 24, 14, 10, 8, 9, 16, 36, 66),
                          strict=True):
        ws.column_dimensions[col].width = width
    wb.save(path)


def _minutes_lines(entries: list[HandoverEntry], settings: Settings, scope: str,
                   at: datetime) -> list[str]:
    d = settings.deliver
    pages = sum(e.pages for e in entries)
    size = sum(e.size for e in entries)
    return [
        f"Hôm nay, ngày {at:%d} tháng {at:%m} năm {at:%Y}, tại {d.receiver_name or '…'}.",
        f"Bên giao: {d.agency_name or settings.signing.body_name or '…'}.",
        f"Bên nhận: {d.receiver_name or '…'}.",
        f"Phạm vi giao nộp: {scope}.",
        f"Số gói tin: {vn_int(len(entries))}; số hồ sơ: {vn_int(len(entries))}; "
        f"số trang số hóa: {vn_int(pages)}; tổng dung lượng: {vn_int(size)} byte.",
        "Các gói tin theo E-ARK CSIP 2.0.4 (Thông tư 05/2025/TT-BNV, Điều 17), bản số hóa "
        "PDF/A-2b đã ký số; danh sách và mã kiểm tra SHA-256 kèm theo (SHA256SUMS).",
        "Bên nhận kiểm tra bằng: sohoa handover verify <thư mục bàn giao>.",
    ]


def _minutes_docx(path: Path, lines: list[str], entries: list[HandoverEntry]) -> None:
    from docx import Document
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Pt

    doc = Document()
    style = doc.styles["Normal"]
    style.font.name = "Times New Roman"
    style.font.size = Pt(13)
    head = doc.add_paragraph("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM\nĐộc lập - Tự do - Hạnh phúc")
    head.alignment = WD_ALIGN_PARAGRAPH.CENTER
    title = doc.add_paragraph()
    title.alignment = WD_ALIGN_PARAGRAPH.CENTER
    title.add_run("BIÊN BẢN GIAO NHẬN TÀI LIỆU LƯU TRỮ SỐ").bold = True
    for line in lines:
        doc.add_paragraph(line)
    table = doc.add_table(rows=1, cols=5)
    table.style = "Table Grid"
    for cell, text in zip(table.rows[0].cells, ("STT", "Mã hồ sơ", "Số trang", "Gói tin",
                                                "SHA-256"), strict=True):
        cell.text = text
    for i, e in enumerate(entries, 1):
        for cell, text in zip(table.add_row().cells,
                              (str(i), e.file_code, vn_int(e.pages), e.package, e.sha256),
                              strict=True):
            cell.text = text
    sign = doc.add_table(rows=1, cols=2)
    sign.rows[0].cells[0].text = "ĐẠI DIỆN BÊN GIAO\n(Ký, ghi rõ họ tên)"
    sign.rows[0].cells[1].text = "ĐẠI DIỆN BÊN NHẬN\n(Ký, ghi rõ họ tên)"
    doc.save(str(path))


def _minutes_pdf(path: Path, lines: list[str], entries: list[HandoverEntry]) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from consumers.official.fonts import pdf_family

    regular = pdf_family()
    bold = f"{regular}-bold"
    body = ParagraphStyle("body", fontName=regular, fontSize=10.5, leading=14)
    centre = ParagraphStyle("centre", parent=body, alignment=1)
    heading = ParagraphStyle("heading", parent=centre, fontName=bold, fontSize=13, leading=18)
    small = ParagraphStyle("small", parent=body, fontSize=7, leading=9)
    story: list[Any] = [
        Paragraph("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM<br/>Độc lập - Tự do - Hạnh phúc", centre),
        Spacer(1, 10), Paragraph("BIÊN BẢN GIAO NHẬN TÀI LIỆU LƯU TRỮ SỐ", heading),
        Spacer(1, 8)]
    story += [Paragraph(_esc(line), body) for line in lines]
    rows = [["STT", "Mã hồ sơ", "Số trang", "Gói tin / SHA-256"]]
    rows += [[str(i), Paragraph(_esc(e.file_code), body), vn_int(e.pages),
              Paragraph(f"{_esc(e.package)}<br/>{e.sha256}", small)]
             for i, e in enumerate(entries, 1)]
    table = Table(rows, colWidths=[28, 110, 50, 330], repeatRows=1)
    table.setStyle(TableStyle([("FONT", (0, 0), (-1, -1), regular, 9),
                               ("FONT", (0, 0), (-1, 0), bold, 9),
                               ("GRID", (0, 0), (-1, -1), 0.5, "black"),
                               ("VALIGN", (0, 0), (-1, -1), "TOP")]))
    story += [Spacer(1, 8), table, Spacer(1, 24),
              Table([["ĐẠI DIỆN BÊN GIAO", "ĐẠI DIỆN BÊN NHẬN"],
                     ["(Ký, ghi rõ họ tên)", "(Ký, ghi rõ họ tên)"]], colWidths=[260, 260],
                    style=[("FONT", (0, 0), (-1, 0), bold, 10),
                           ("FONT", (0, 1), (-1, 1), regular, 9),
                           ("ALIGN", (0, 0), (-1, -1), "CENTER")])]
    SimpleDocTemplate(str(path), pagesize=A4, title="Biên bản giao nhận",
                      leftMargin=40, rightMargin=40).build(story)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
