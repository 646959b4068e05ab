"""An official document as an XLSX workbook: a first sheet with the heading, text and
signature, then one sheet per table with typed cells (numbers as numbers, dates as dates,
shares as percentages, each with its number format), the header row repeated on every printed
page, a print area, A4 landscape fitted to the page width. Every row passes
:func:`consumers.cells.cells`, so no text a contractor or a plan typed becomes a formula."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from consumers import vi
from consumers.cells import cells
from consumers.official.form import PARTY_TITLE, STATE_MOTTO
from consumers.official.model import Chart, Col, OfficialDoc, Para, Table

FORMATS = {"int": vi.XLSX_INT, "dec1": vi.XLSX_DEC1, "pct": vi.XLSX_PCT,
           "date": vi.XLSX_DATE, "money": vi.XLSX_MONEY}
HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
TOTAL_FILL = PatternFill("solid", fgColor="F2F2F2")
BOLD = Font(bold=True)
LATE = Font(color="C00000")
HEADER_ROW = 5


def _typed(value: Any, col: Col) -> Any:
    if value is None or value == "":
        return None
    if col.kind == "date" and isinstance(value, date) and not isinstance(value, datetime):
        return datetime(value.year, value.month, value.day)
    return value


def _page_setup(ws: Worksheet, last_col: int, last_row: int, title_rows: str | None) -> None:
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.horizontalCentered = True
    ws.page_margins.left, ws.page_margins.right = 0.8, 0.6
    ws.page_margins.top = ws.page_margins.bottom = 0.8
    ws.print_area = f"A1:{get_column_letter(last_col)}{last_row}"
    if title_rows:
        ws.print_title_rows = title_rows
    ws.oddFooter.center.text = "Trang &P/&N"


def _table_sheet(wb: Workbook, doc: OfficialDoc, t: Table) -> None:
    ws = wb.create_sheet(t.sheet[:31])
    n = len(t.columns)
    ws.append(cells([doc.title]))
    ws["A1"].font = Font(bold=True, size=13)
    ws.append(cells([doc.as_of]))
    ws.append(cells([t.caption]))
    ws["A3"].font = BOLD
    ws.append([])
    ws.append(cells([c.title for c in t.columns]))
    wrap = Alignment(wrap_text=True, vertical="center", horizontal="center")
    for c in ws[HEADER_ROW]:
        c.font, c.fill, c.alignment = BOLD, HEADER_FILL, wrap
    for i, c in enumerate(t.columns, 1):
        ws.column_dimensions[get_column_letter(i)].width = c.xlsx_width
    row = HEADER_ROW  # counted here: ws.max_row scans every cell on each call
    for r in t.rows:
        row += 1
        if r.style == "group":
            ws.append(cells(r.values))
            for ci in range(1, len(r.values) + 1):
                ws.cell(row, ci).font = BOLD
            continue
        ws.append(cells(_typed(v, c) for v, c in zip(r.values, t.columns, strict=True)))
        strong = r.style in ("subtotal", "total")
        for ci, c in enumerate(t.columns, 1):
            cell = ws.cell(row, ci)
            if c.kind in FORMATS:
                cell.number_format = FORMATS[c.kind]
            if strong:
                cell.font, cell.fill = BOLD, TOTAL_FILL
        if r.emphasis:
            ws.cell(row, n).font = LATE
    for note in t.notes:
        ws.append(cells([note]))
    ws.freeze_panes = ws.cell(HEADER_ROW + 1, 1)
    _page_setup(ws, n, row + len(t.notes), f"{HEADER_ROW}:{HEADER_ROW}")


def _text_sheet(wb: Workbook, doc: OfficialDoc) -> None:
    ws = wb.active
    ws.title = "Văn bản"
    h = doc.heading
    top = [PARTY_TITLE] if h.form == "party" else list(STATE_MOTTO)
    lines: list[tuple[str, Font | None]] = [(x, None) for x in (h.parent,) if x]
    lines += [(h.issuer, BOLD), (h.number_line, None), ("", None)]
    lines += [(x, BOLD) for x in top]
    lines += [(h.place_date, Font(italic=True)), ("", None), (h.doc_type, Font(bold=True,
                                                                               size=13)),
              (h.summary, BOLD), ("", None)]
    for b in doc.body:
        if isinstance(b, Para):
            lines.append((b.text, BOLD if b.style in ("heading", "caption") else None))
        elif isinstance(b, Table):
            lines.append((f"({b.caption}: xem trang tính «{b.sheet[:31]}»)", None))
        elif isinstance(b, Chart) and b.caption:
            lines.append((f"({b.caption}: xem trang tính «Biểu đồ»)", None))
    lines.append(("", None))
    if doc.recipients is not None:
        lines.append((doc.recipients_title, Font(bold=True, italic=True)))
        lines += [(r, None) for r in doc.recipients]
        lines.append(("", None))
    for sb in doc.signatures:
        lines += [(x, BOLD) for x in sb.lines]
        if sb.hint:
            lines.append((sb.hint, Font(italic=True)))
        lines += [("", None), ("", None), (sb.name, BOLD), ("", None)]
    ws.column_dimensions["A"].width = 110
    wrap = Alignment(wrap_text=True, vertical="top")
    for text, font in lines:
        ws.append(cells([text]))
        c = ws.cell(ws.max_row, 1)
        c.alignment = wrap
        if font is not None:
            c.font = font
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.orientation = "portrait"
    ws.print_area = f"A1:A{ws.max_row}"


def write_xlsx(doc: OfficialDoc, out: Path) -> Path:
    wb = Workbook()
    _text_sheet(wb, doc)
    for t in doc.tables():
        _table_sheet(wb, doc, t)
    for b in [*doc.body, *doc.appendix]:
        if isinstance(b, Chart) and b.xlsx is not None:
            b.xlsx(wb)
    wb.save(out)
    return out
